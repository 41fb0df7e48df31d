#!/bin/sh
# The demo, run by `cargo xtask demo` inside the VM test bed (or natively on
# a machine with the devices and a WAYLAND_DISPLAY). Arguments: the output
# folder and the folder of the release build (winsys, examples/).
#
# The console gets only the demo's own lines ("[demo] ..."): what each
# program prints, drivers' messages included, goes to a log per step in
# the output folder.
set -e
OUT=$1
BIN=$2
mkdir -p "$OUT"
say() { echo "[demo] $*"; }
# The value of "KEY" in the last JSON line of FILE (numbers and strings).
field() {
  grep '^{' "$2" | tail -n 1 | sed -n -e "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" \
    -e "t" -e "s/.*\"$1\":\([^,}]*\).*/\1/p"
}
# Run the cube with ARGS..., figures in FILE (its whole output); says one line.
cube() {
  file=$1
  shift
  if "$BIN/examples/cube" --json "$@" > "$file" 2>&1; then
    say "  $(field fps "$file") fps, $(field cpu_ms_per_frame "$file") ms CPU per frame," \
      "latency $(field latency_mean_ms "$file") ms; sync $(field sync "$file")," \
      "buffers: $(field path "$file") ($file)"
  else
    say "  FAILED: $(tail -n 1 "$file") ($file)"
    return 1
  fi
}
# frames per second in FILE, for arithmetic in awk.
fps() { field fps "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }'; }

say "winsys info: what this machine can share -> $OUT/info.txt, info.json, info.html"
"$BIN/winsys" info --html "$OUT/info.html" > "$OUT/info.txt" 2> "$OUT/info.log"
"$BIN/winsys" info --json > "$OUT/info.json" 2>> "$OUT/info.log"
sed -n '1,12p' "$OUT/info.txt" | sed 's/^/[demo]   /'

WESTON=
if [ -z "$WAYLAND_DISPLAY" ]; then
  say "starting weston 14 headless (gl renderer on llvmpipe, kiosk shell, 256x256) -> $OUT/weston.log"
  weston --backend=headless --renderer=gl --socket=winsys-demo --idle-time=0 \
    --shell=kiosk --width=256 --height=256 > "$OUT/weston.log" 2>&1 &
  WESTON=$!
  i=0
  while [ ! -S "$XDG_RUNTIME_DIR/winsys-demo" ] && [ $i -lt 300 ]; do sleep 0.2; i=$((i + 1)); done
  export WAYLAND_DISPLAY=winsys-demo
fi

say "winsys interop: every exporter x importer pair, tried -> $OUT/interop.txt, interop.json, interop.html"
"$BIN/winsys" interop --json --html "$OUT/interop.html" > "$OUT/interop.json" 2> "$OUT/interop.log"
"$BIN/winsys" interop > "$OUT/interop.txt" 2>> "$OUT/interop.log"
sed -n '1,12p' "$OUT/interop.txt" | sed 's/^/[demo]   /'

say "the cube on weston, 300 frames through winsys (its automatic choice) -> $OUT/cube-winsys.txt"
cube "$OUT/cube-winsys.txt" --frames 300
say "the same through Mesa's own WSI (VK_KHR_wayland_surface) -> $OUT/cube-mesa.txt"
cube "$OUT/cube-mesa.txt" --frames 300 --wsi mesa
say "the same through winsys with explicit sync (a choice here) -> $OUT/cube-explicit.txt"
cube "$OUT/cube-explicit.txt" --frames 300 --sync explicit
W=$(fps "$OUT/cube-winsys.txt"); M=$(fps "$OUT/cube-mesa.txt"); E=$(fps "$OUT/cube-explicit.txt")
say "what the weston figures mean: winsys ($(field sync "$OUT/cube-winsys.txt") sync, $(field path "$OUT/cube-winsys.txt"))"
say "  $(ratio "$W" "$M")x Mesa's WSI (lavapipe copies every frame into wl_shm). weston here"
say "  composes on the CPU (llvmpipe; its main device, vgem, renders nothing), and for a surface"
say "  with explicit sync it finishes each composition before it sends the frame callbacks that"
say "  FIFO waits for: measured in this run, explicit sync runs at $(ratio "$E" "$W")x the automatic"
say "  choice. So winsys's FIFO takes its zero-copy wl_shm there (the images' own memory, no copy);"
say "  MAILBOX keeps explicit sync. On a compositor that composes asynchronously the dma-buf path is"
say "  ahead (sway below)."
if [ -n "$WESTON" ]; then kill "$WESTON"; wait "$WESTON" 2>/dev/null || true; fi

# sway 1.12 on virtio-gpu: drm-syncobj, acquire and release as timeline
# points (in the VM test bed only: it needs a DRM card node of its own).
CARD=
for c in /sys/class/drm/card[0-9]*; do
  case "$(basename "$(readlink "$c/device/driver" 2>/dev/null)")" in
    virtio*) [ -e "/dev/dri/$(basename "$c")" ] && CARD=/dev/dri/$(basename "$c") ;;
  esac
done
if [ -n "$WESTON" ] && [ -n "$CARD" ] && command -v sway > /dev/null; then
  SWAY_DIR=$XDG_RUNTIME_DIR/winsys-demo-sway
  mkdir -p "$SWAY_DIR"; chmod 700 "$SWAY_DIR"
  echo "default_border none" > "$SWAY_DIR/config"
  say "starting sway 1.12 (DRM backend on $CARD, gles2 on llvmpipe) -> $OUT/sway.log"
  env XDG_RUNTIME_DIR="$SWAY_DIR" LIBSEAT_BACKEND=noop WLR_BACKENDS=drm WLR_DRM_DEVICES="$CARD" \
    WLR_RENDERER=gles2 WLR_LIBINPUT_NO_DEVICES=1 WAYLAND_DISPLAY= \
    sway -c "$SWAY_DIR/config" > "$OUT/sway.log" 2>&1 &
  SWAY=$!
  i=0
  while ! ls "$SWAY_DIR"/wayland-? > /dev/null 2>&1 && [ $i -lt 300 ]; do sleep 0.2; i=$((i + 1)); done
  SOCK=$(ls "$SWAY_DIR"/wayland-? 2> /dev/null | head -n 1)
  if [ -n "$SOCK" ]; then
    sleep 2
    say "the cube on sway at 1920x1080, 20 frames through winsys -> $OUT/cube-sway-winsys.txt"
    WAYLAND_DISPLAY=$SOCK cube "$OUT/cube-sway-winsys.txt" --frames 20 --size 1920x1080 \
      --timeout 60 || true
    say "the same through Mesa's WSI -> $OUT/cube-sway-mesa.txt"
    WAYLAND_DISPLAY=$SOCK cube "$OUT/cube-sway-mesa.txt" --frames 20 --size 1920x1080 \
      --timeout 60 --wsi mesa || true
    SW=$(fps "$OUT/cube-sway-winsys.txt"); SM=$(fps "$OUT/cube-sway-mesa.txt")
    say "what the sway figures mean: sway composes asynchronously (it waits for the acquire point"
    say "  in its event loop and signals the release point when its GPU is done), so winsys's"
    say "  zero-copy drm-syncobj path renders the next frame while sway composes the last:"
    say "  $(ratio "$SW" "$SM")x Mesa's wl_shm copy at 1920x1080 in this run (at 256x256, where a"
    say "  frame is cheap, the two are close: docs/benchmarks.md)."
  else
    say "sway did not come up (see $OUT/sway.log): no sway figures"
  fi
  kill "$SWAY" 2> /dev/null || true
  wait "$SWAY" 2> /dev/null || true
fi

say "the reference compositor (examples/compositor) with the cube as its client -> $OUT/screenshot.png"
"$BIN/examples/compositor" --socket winsys-demo-compositor --png "$OUT/screenshot.png" \
  --run cube --frames 200 > "$OUT/compositor.txt" 2>&1
grep -E '^(cube|compositor): (wsi|[0-9]+ frames|done|output)' "$OUT/compositor.txt" | sed 's/^/[demo]   /' || true
say "  the compositor imports the cube's dma-bufs into Vulkan (lavapipe), waits for each acquire"
say "  point without blocking its event loop, and signals each release point after composing."
say "vkcube (vulkan-tools, unmodified) through the Vulkan layer VK_LAYER_WINSYS_wsi on the"
say "  reference compositor -> $OUT/vkcube-layer.png, $OUT/vkcube-layer.txt"
"$BIN/winsys" layer install --explicit --dir "$OUT/layer" > "$OUT/layer-install.txt" 2>&1
rm -f "$OUT/layer-report.jsonl"
if "$BIN/examples/compositor" --socket winsys-demo-layer --png "$OUT/vkcube-layer.png" \
  --run env VK_ADD_LAYER_PATH="$OUT/layer" VK_INSTANCE_LAYERS=VK_LAYER_WINSYS_wsi \
  WINSYS_LAYER_REPORT="$OUT/layer-report.jsonl" \
  vkcube --wsi wayland --width 256 --height 256 --c 120 > "$OUT/vkcube-layer.txt" 2>&1; then
  last=$(grep '"event":"destroy"' "$OUT/layer-report.jsonl" | tail -n 1)
  say "  vkcube's VK_KHR_swapchain was winsys's: $(echo "$last" | sed -n 's/.*"sync":"\([^"]*\)".*/\1/p') sync," \
    "$(echo "$last" | sed -n 's/.*"frames":\([0-9]*\).*/\1/p') frames (the layer's report: $OUT/layer-report.jsonl)"
  say "  any Vulkan app the same way: winsys layer install, then WINSYS_LAYER=1 APP"
else
  say "  FAILED: $(tail -n 1 "$OUT/vkcube-layer.txt") ($OUT/vkcube-layer.txt)"
fi
say "done"
