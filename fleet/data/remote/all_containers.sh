
echo "@@engine"; docker version --format '{{.Server.Version}}' 2>&1; echo "@@engine_rc $?"
echo "@@containers"
ids=$(docker ps -aq --no-trunc 2>/dev/null)
# shellcheck disable=SC2086 # the ids are split into words on purpose
[ -n "$ids" ] && docker inspect --type container --format '{{json .}}' $ids 2>/dev/null
echo "@@end"
