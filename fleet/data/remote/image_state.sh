
ref="$1"
info=$(docker info --format '{{.ServerVersion}}|{{.DockerRootDir}}|{{json .DriverStatus}}' 2>&1)
echo "@@engine"
case "$info" in
  [0-9]*) printf '%s\n' "${info%%|*}"; echo "@@engine_rc 0" ;;
  *) printf '%s\n' "$info"; echo "@@engine_rc 1"; exit 0 ;;
esac
echo "@@store"; printf '%s\n' "${info#*|*|}"
store=classic; case "$info" in *io.containerd.snapshotter*) store=containerd ;; esac
root=${info#*|}; root=${root%%|*}; [ -n "$root" ] || root=/var/lib/docker
#@include image_target.sh

echo "@@layers"; docker image ls -aq --no-trunc 2>/dev/null | sort -u | xargs -r docker image inspect --format '{{json .RootFS.Layers}}' 2>/dev/null
if [ "$store" = containerd ]; then
  echo "@@content"; ctr --address /run/docker/containerd/containerd.sock -n moby content ls 2>&1; echo "@@content_rc $?"
fi
echo "@@df"; df -PB1 "$root" 2>/dev/null | tail -n 1
echo "@@cuda"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi 2>/dev/null | sed -n 's/.*Driver Version: *\([0-9.]*\).*CUDA Version: *\([0-9.]*\).*/\1 \2/p' | head -n 1
fi
echo "@@end"
