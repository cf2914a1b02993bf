
repo="$1"; history_lines="$2"; fast="$3"; cfg="${DOCKER_CONFIG:-$HOME/.docker}/config.json"
#@include gpu_processes.sh
if [ -n "$fast" ] && [ -z "$DOCKER_HOST$DOCKER_CONTEXT" ] && [ -S /var/run/docker.sock ] &&
  command -v python3 >/dev/null 2>&1 && { [ ! -e "$cfg" ] || ! grep -qs currentContext "$cfg"; }; then
  python3 -I -S -c "$fast" "$repo" "$history_lines" && exit 0
fi
echo "@@engine"; docker version --format '{{.Server.Version}}' 2>&1; echo "@@engine_rc $?"
echo "@@containers"
ids=$(docker ps -aq --no-trunc --filter "label=io.fleet.framework=$repo" 2>/dev/null)
# shellcheck disable=SC2086 # the ids are split into words on purpose
[ -n "$ids" ] && docker inspect --type container --format '{{json .}}' $ids 2>/dev/null
echo "@@images"
imgs=$(docker image ls -q --no-trunc --filter "label=io.fleet.framework=$repo" 2>/dev/null | sort -u)
# shellcheck disable=SC2086 # the ids are split into words on purpose
[ -n "$imgs" ] && docker image inspect --format '{{json .}}' $imgs 2>/dev/null
echo "@@lock"; cat /var/lib/fleet/deploy.lock 2>/dev/null; echo
echo "@@history"; tail -n "$history_lines" /var/lib/fleet/history.jsonl 2>/dev/null
echo "@@store"; store=$(docker info --format '{{json .DriverStatus}}' 2>/dev/null); echo "$store"
echo "@@manifests"
case "$store" in *io.containerd.snapshotter*)
  sock=/run/docker/containerd/containerd.sock
  for i in $imgs; do
    m=$(ctr --address "$sock" -n moby content get "$i" 2>/dev/null | head -c 65536 | tr -d '\n')
    [ -n "$m" ] && echo "$i $m"
  done;;
esac
echo "@@end"
