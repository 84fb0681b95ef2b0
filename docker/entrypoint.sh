#!/bin/sh
# First start: write the embedded default into /data; then run the given gateway verb.
set -e
if [ ! -f "$GATEWAY_CONFIG" ]; then
    gateway init "$(dirname "$GATEWAY_CONFIG")"
fi
exec gateway "$@"
