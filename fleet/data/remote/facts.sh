
exec 2>&1
LC_ALL=C; export LC_ALL
echo "@@hostname"; hostname
echo "@@kernel"; uname -sr
echo "@@docker_info"; docker info --format '{{json .}}'; echo "@@docker_info_rc $?"
echo "@@docker_api"; docker version --format '{{.Server.APIVersion}}'
echo "@@nvidia_smi"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=index,uuid,name,driver_version,memory.total,memory.used,utilization.gpu --format=csv,noheader,nounits
  echo "@@nvidia_cuda"; nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -n 1
else
  echo "absent"
fi
root=$(docker info --format '{{.DockerRootDir}}' 2>/dev/null); [ -n "$root" ] || root=/var/lib/docker
echo "@@df_docker"; df -PB1 "$root" | tail -n 1
echo "@@df_data"; if [ -e /data ]; then df -PB1 /data | tail -n 1; else echo "absent"; fi
echo "@@framework"; docker ps --filter label=io.fleet.framework --format '{{json .}}'
echo "@@end"
