
ref="$1"; source="$2"; shift 2
docker save "$ref" | python3 -c "$source" "$@"
