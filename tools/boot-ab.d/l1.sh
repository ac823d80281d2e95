#!/bin/sh
# Runs inside L1 (tools/boot-ab): ROUNDS rounds of verbose boots, variants alternating.
# usage: l1.sh OUTDIR ROUNDS NAME=BINARY|NAME=qemu ...
set -u
out=$1; rounds=$2; shift 2
here=$(dirname "$0")
boot() { # name round binary-and-args...
  n=$1; r=$2; shift 2
  if [ "$1" = qemu ]; then
    python3 "$here/ts.py" "$out/${n}_$r.txt" "$MARK" qemu-system-x86_64 -accel kvm -M microvm,rtc=on -cpu host \
      -m 512 -smp 2 -nodefaults -no-user-config -nographic -no-reboot -serial stdio \
      -kernel "$KERNEL" -initrd "$INITRD" -append "$CMDLINE"
  else
    python3 "$here/ts.py" "$out/${n}_$r.txt" "$MARK" "$@" --kernel "$KERNEL" --initrd "$INITRD" \
      --cmdline "$CMDLINE" --vcpus 2 --mem 512
  fi
}
for r in $(seq 1 "$rounds"); do
  for v in "$@"; do
    name=${v%%=*}; bin=${v#*=}
    # $bin unquoted on purpose: "env VAR=1 path" runs a build with settings.
    echo "RESULT round=$r variant=$name $(boot "$name" "$r" $bin)"
    sleep 1
  done
done
