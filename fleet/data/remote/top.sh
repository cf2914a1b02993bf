# What `fleet top` shows of a host, in one round trip: its GPUs' use, their compute
# processes (with age and container), and the framework containers that run.
#@include gpu_processes.sh
echo "@@gpus"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=index,uuid,name,utilization.gpu,memory.used,memory.total --format=csv,noheader,nounits 2>&1
  echo "@@gpus_rc $?"
else
  echo "@@gpus_rc absent"
fi
echo "@@framework"
docker ps --filter label=io.fleet.framework --format '{{.Names}}|{{.Label "io.fleet.tag"}}|{{.Status}}' 2>&1
echo "@@framework_rc $?"
echo "@@end"
