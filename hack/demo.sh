#!/usr/bin/env bash
# make demo: a small C "server" whose 3rd request dereferences NULL.
# Natively it crashes; under `assure run` the faulting request fails with the
# handler's own error value and the server carries on with its state intact.
set -euo pipefail
export PATH=/usr/local/go/bin:$PATH
cd "$(dirname "$0")/.."

ASSURE=${ASSURE:-$PWD/bin/assure}
[ -x "$ASSURE" ] || { echo "demo: $ASSURE not found: run make build" >&2; exit 1; }
command -v gcc >/dev/null || { echo "demo: gcc not found: run hack/install-deps.sh" >&2; exit 1; }

tmp=$(mktemp -d /tmp/assure-demo.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

cat >"$tmp/server.c" <<'C'
#include <stdio.h>
#include <string.h>

/* Server state that lives across requests. */
static struct {
	long ok, failed;  /* requests answered / refused */
	long inflight;    /* requests being handled right now */
	long bytes;       /* bytes of request paths served */
} st;

/* Handles one request line "METHOD PATH". Returns 0, or -1 on a bad request:
 * the caller already handles -1, which makes this a rescue point.
 * The bug: a line without a space makes strchr return NULL, and the code
 * writes through it. */
__attribute__((noinline)) int handle_request(int n, char *line)
{
	st.inflight++;
	char *path = strchr(line, ' ');
	*path++ = '\0';                 /* NULL dereference for "BOGUS" */
	if (strcmp(line, "GET") != 0) {
		st.inflight--;
		return -1;
	}
	st.bytes += (long)strlen(path);
	printf("request %d: 200 OK %s\n", n, path);
	st.inflight--;
	return 0;
}

int main(void)
{
	char line[256];
	int n = 0;
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\r\n")] = '\0';
		n++;
		if (handle_request(n, line) < 0) {
			st.failed++;
			printf("request %d: 400 Bad Request\n", n);
		} else {
			st.ok++;
		}
	}
	printf("server: %d requests: ok=%ld failed=%ld inflight=%ld bytes=%ld\n",
	       n, st.ok, st.failed, st.inflight, st.bytes);
	return 0;
}
C
gcc -O1 -g -o "$tmp/server" "$tmp/server.c"

printf 'GET /index.html\nGET /about\nBOGUS\nGET /contact\nGET /news\n' >"$tmp/requests"

cat >"$tmp/manifest.json" <<JSON
{
  "version": 1,
  "rescuePoints": [
    {"binary": "$tmp/server", "function": "handle_request", "return": -1}
  ]
}
JSON

hr() { printf '\n== %s\n' "$*"; }

hr "the requests"
cat "$tmp/requests"

hr "the manifest"
cat "$tmp/manifest.json"

hr "natively: ./server < requests"
set +e
"$tmp/server" <"$tmp/requests"
status=$?
set -e
if [ "$status" -gt 128 ]; then
	echo "-> exit status $status: killed by SIG$(kill -l $((status - 128)) 2>/dev/null || echo "NAL $((status - 128))")"
else
	echo "-> exit status $status"
fi

hr "under assure: bin/assure run --manifest manifest.json --events events.jsonl -- ./server < requests"
set +e
"$ASSURE" run --manifest "$tmp/manifest.json" --events "$tmp/events.jsonl" -- "$tmp/server" <"$tmp/requests" | tee "$tmp/out"
status=${PIPESTATUS[0]}
set -e
echo "-> exit status $status"

hr "the recovery event (events.jsonl)"
if ! grep '"type": *"recovered"' "$tmp/events.jsonl" 2>/dev/null; then
	echo "demo: FAILED: no \"recovered\" event in events.jsonl" >&2
	[ -s "$tmp/events.jsonl" ] && { echo "events.jsonl:" >&2; cat "$tmp/events.jsonl" >&2; }
	exit 1
fi
if [ "$status" -ne 0 ]; then
	echo "demo: FAILED: the server under assure exited with status $status" >&2
	exit 1
fi
if ! grep -q 'requests: ok=4 failed=1 inflight=0 ' "$tmp/out"; then
	echo "demo: FAILED: the server's counters are not ok=4 failed=1 inflight=0" >&2
	exit 1
fi
echo
echo "demo: the server survived request 3 under assure: that request failed with 400, the others were served, inflight is back to 0"
