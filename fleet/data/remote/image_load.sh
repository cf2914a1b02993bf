
ref="$1"; store="$2"
docker load --quiet || exit $?
#@include image_target.sh
