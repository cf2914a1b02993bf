
url="$1"; name="$2"
# No name: the caller read the container's state just before (fleet ps).
[ -z "$name" ] || echo "state $(docker inspect --type container --format '{{.State.Status}}' "$name" 2>/dev/null)"
[ -n "$url" ] || exit 0
if command -v curl >/dev/null 2>&1; then
  code=$(curl -s -o /dev/null -m 3 -w '%{http_code}' "$url" 2>/dev/null)
elif command -v wget >/dev/null 2>&1; then
  wget -q -T 3 -O /dev/null "$url" 2>/dev/null && code=200 || code=000
else
  code=$(python3 -c 'import sys,urllib.request as u
try: print(u.urlopen(sys.argv[1], timeout=3).status)
except Exception as e: print(getattr(e, "code", "000"))' "$url" 2>/dev/null)
fi
echo "http ${code:-000}"
