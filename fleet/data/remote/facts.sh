
exec 2>&1
LC_ALL=C; export LC_ALL
echo "@@hostname"; hostname
echo "@@kernel"; uname -sr
# One `docker info` (the engine counts its images and asks its storage driver each time):
# the data root on the first line, for df below, then the whole answer.
nl='
'
echo "@@docker_info"; info=$(docker info --format '{{.DockerRootDir}}{{"\n"}}{{json .}}'); rc=$?
case $info in *"$nl"*) root=${info%%"$nl"*}; info=${info#*"$nl"} ;; *) root= ;; esac
[ -n "$info" ] && printf '%s\n' "$info"
echo "@@docker_info_rc $rc"
echo "@@docker_api"; docker version --format '{{.Server.APIVersion}}'
echo "@@nvidia_smi"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=index,uuid,name,driver_version,memory.total,memory.used,utilization.gpu --format=csv,noheader,nounits
  echo "@@nvidia_cuda"; nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -n 1
else
  echo "absent"
fi
[ -n "$root" ] || root=/var/lib/docker
echo "@@df_docker"; df -PB1 "$root" | tail -n 1
echo "@@df_data"; if [ -e /data ]; then df -PB1 /data | tail -n 1; else echo "absent"; fi
echo "@@framework"; docker ps --filter label=io.fleet.framework --format '{{json .}}'
echo "@@end"
