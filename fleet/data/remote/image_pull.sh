
name="$1"; store="$2"; registry="$3"; ref="$name"; config=""
if [ -n "$registry" ]; then
  config=$(umask 077 && mktemp -d) || exit 125
  trap 'rm -rf "$config"' EXIT
  trap 'exit 129' HUP INT TERM
  IFS= read -r auth || exit 125
  umask 077
  printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$registry" "$auth" >"$config/config.json" || exit 125
  mkdir "$config/hosts" "$config/hosts/$registry" || exit 125
  printf 'server = "http://%s"\n\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n  [host."http://%s".header]\n    Authorization = "Basic %s"\n' \
    "$registry" "$registry" "$registry" "$auth" >"$config/hosts/$registry/hosts.toml" || exit 125
  set -- --config "$config"
else
  set --
fi
docker "$@" pull --quiet "$name" >/dev/null || exit $?
if [ "$store" = containerd ]; then
  if [ -n "$config" ]; then set -- --hosts-dir "$config/hosts"; else set --; fi
  fetched=$(ctr --address /run/docker/containerd/containerd.sock -n moby content fetch "$@" "$name" 2>&1)
  echo "@@fetch_rc $?"; echo "@@fetch"; printf '%s\n' "$fetched" | tail -n 5
fi
#@include image_target.sh
