#!/bin/sh
# shimvmm ($SHIMVMM_REAL_BIN) with ",dma=strict" added to every "--net vfio=..."
# argument: for tests that build their own command line (jumbo-dma-modes.sh).
n=$#
prev=
for a in "$@"; do
  if [ "$prev" = "--net" ] && [ "${a#vfio=}" != "$a" ]; then a="$a,dma=strict"; fi
  set -- "$@" "$a"
  prev=$a
done
shift "$n"
exec "$SHIMVMM_REAL_BIN" "$@"
