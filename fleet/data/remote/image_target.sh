
# shellcheck disable=SC2154 # a part: ref and store are set by the program including it
echo "@@target"; target=$(docker image inspect --format '{{.Id}} {{json .RootFS.Layers}}' "$ref" 2>/dev/null) && printf '%s\n' "$target"
echo "@@listed"; docker image ls -q --no-trunc "$ref" 2>/dev/null
if [ "$store" = containerd ]; then
  echo "@@target_manifest"; [ -n "$target" ] && ctr --address /run/docker/containerd/containerd.sock -n moby content get "${target%% *}" 2>/dev/null | head -c 262144; echo
fi
