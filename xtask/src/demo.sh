#!/bin/sh
# The demo, run by `cargo xtask demo` inside the VM test bed (or natively on
# a machine with the devices and a WAYLAND_DISPLAY). Arguments: the output
# folder and the folder of the release build (winsys, examples/).
set -e
OUT=$1
BIN=$2
mkdir -p "$OUT"
say() { echo "[demo] $*"; }

say "winsys info -> $OUT/info.txt, info.json, info.html"
"$BIN/winsys" info --html "$OUT/info.html" > "$OUT/info.txt" 2>/dev/null
"$BIN/winsys" info --json > "$OUT/info.json" 2>/dev/null
sed -n '1,12p' "$OUT/info.txt"

WESTON=
if [ -z "$WAYLAND_DISPLAY" ]; then
  say "starting weston 14 headless (gl renderer, 256x256) for the compositor column and the cube"
  weston --backend=headless --renderer=gl --socket=winsys-demo --idle-time=0 \
    --shell=kiosk --width=256 --height=256 > "$OUT/weston.log" 2>&1 &
  WESTON=$!
  i=0
  while [ ! -S "$XDG_RUNTIME_DIR/winsys-demo" ] && [ $i -lt 300 ]; do sleep 0.2; i=$((i + 1)); done
  export WAYLAND_DISPLAY=winsys-demo
fi

say "winsys interop: every exporter x importer pair -> $OUT/interop.txt, interop.json, interop.html"
"$BIN/winsys" interop --json --html "$OUT/interop.html" > "$OUT/interop.json"
"$BIN/winsys" interop > "$OUT/interop.txt" 2>/dev/null
sed -n '1,12p' "$OUT/interop.txt"

say "the cube through winsys, 300 frames -> $OUT/cube-winsys.txt"
"$BIN/examples/cube" --frames 300 --json > "$OUT/cube-winsys.txt" 2>&1
grep '^cube:' "$OUT/cube-winsys.txt" || true
say "the cube through Mesa's WSI, 300 frames -> $OUT/cube-mesa.txt"
"$BIN/examples/cube" --frames 300 --wsi mesa --json > "$OUT/cube-mesa.txt" 2>&1
grep '^cube:' "$OUT/cube-mesa.txt" || true
if [ -n "$WESTON" ]; then kill "$WESTON"; fi

say "the reference compositor (examples/compositor) with the cube as its client -> $OUT/screenshot.png"
"$BIN/examples/compositor" --socket winsys-demo-compositor --png "$OUT/screenshot.png" \
  --run cube --frames 200 > "$OUT/compositor.txt" 2>&1
grep -E '^(cube|compositor): (wsi|[0-9]+ frames|done|output)' "$OUT/compositor.txt" || true
say "done"
