#!/usr/bin/env bash
# Runs a command under another Linux kernel in QEMU, as root, in the caller's cwd and environment:
#
#   scripts/run-in-kernel.sh [options] <series|release> [--] <command> [args...]
#
#   <series>    6.1, 6.12, ...: the newest Debian `linux-image-<series>.*-amd64` apt knows, or an exact
#               release such as 6.1.0-56-amd64
#   options     --timeout SECONDS   hard limit for the whole VM (default 900; exit 124 when hit)
#               --hugepages N       reserve N huge pages at boot (kernel command line hugepages=N)
#               --memory MIB        guest RAM (default 4096)      --cpus N   guest vCPUs (default: host's, at most 4)
#               --rw DIR            another directory shared read-write at its own path (repeatable)
#               --prepare           only fetch and prepare the kernel (no VM)
#   environment KMATRIX_CACHE (default /var/cache/uffd-kmatrix), KMATRIX_ACCEL=auto|tcg|kvm,
#               KMATRIX_VERBOSE=1 (print the guest console), KMATRIX_TIMEOUT, KMATRIX_HUGEPAGES,
#               KMATRIX_MEMORY, KMATRIX_CPUS, KMATRIX_RW (colon-separated), KMATRIX_APPEND (kernel cmdline),
#               KMATRIX_CPU (QEMU -cpu under TCG; default max,la57=off)
#
# The guest sees the host's / read-only (9p) under a tmpfs overlay, so everything installed on the host is
# there, and writes outside the read-write shares are discarded. The repository holding this script and the
# current directory (when it is not /) are shared read-write at their own paths. /tmp is a fresh tmpfs and
# there is no network but lo: build on the host first. The command's stdout and stderr stream back
# separately and its exit status is this script's. 124: timeout; 125: the guest failed before the command
# finished (the console tail is printed); 126: bad usage or the host cannot run QEMU.
#
# The kernel package is fetched with `apt-get download` and unpacked with `dpkg -x`: nothing is installed
# and /boot and /lib/modules are never touched. Prepared kernels (vmlinux + initramfs) are cached per
# release; preparing one holds a lock, so concurrent runs are safe.
#
# KVM is used only when kvm_intel or kvm_amd is loaded. Some hosts (a Firecracker VM with nested PVM, for
# one) have a /dev/kvm that stock kernels cannot run on: they abort or hang. TCG is 10-15x slower than the
# host but works everywhere.
set -euo pipefail
# One block, parsed whole before it runs: editing or checking out this file while it runs is harmless.
{

SELF=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(dirname "$(dirname "$SELF")")
PROG=${0##*/}

die() { echo "$PROG: $*" >&2; exit 126; }
note() { if [ "${KMATRIX_VERBOSE:-0}" = 1 ]; then echo "$PROG: $*" >&2; fi; }
usage() { sed -n '2,16s/^# \{0,1\}//p' "$SELF" >&2; exit "${1:-126}"; }

timeout_s=${KMATRIX_TIMEOUT:-900}
hugepages=${KMATRIX_HUGEPAGES:-0}
memory=${KMATRIX_MEMORY:-4096}
host_cpus=$(nproc)
cpus=${KMATRIX_CPUS:-$((host_cpus > 4 ? 4 : host_cpus))}
rw_dirs=()
if [ -n "${KMATRIX_RW:-}" ]; then IFS=: read -r -a rw_dirs <<<"$KMATRIX_RW"; fi
prepare_only=0

while [ $# -gt 0 ]; do
  case $1 in
    --timeout) timeout_s=${2:?}; shift 2 ;;
    --hugepages) hugepages=${2:?}; shift 2 ;;
    --memory) memory=${2:?}; shift 2 ;;
    --cpus) cpus=${2:?}; shift 2 ;;
    --rw) rw_dirs+=("${2:?}"); shift 2 ;;
    --prepare) prepare_only=1; shift ;;
    -h|--help) usage 0 ;;
    -*) die "unknown option $1" ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || usage
series=$1; shift
if [ "${1:-}" = -- ]; then shift; fi
[ $prepare_only = 1 ] || [ $# -ge 1 ] || usage
[[ $series =~ ^[0-9]+\.[0-9]+([.+~a-z0-9-]*)?$ ]] || die "not a kernel series or release: $series"
for n in "$timeout_s" "$hugepages" "$memory" "$cpus"; do [[ $n =~ ^[0-9]+$ ]] || die "not a number: $n"; done

if [ -n "${KMATRIX_CACHE:-}" ]; then cache=$KMATRIX_CACHE
elif [ -w /var/cache ] || [ -w /var/cache/uffd-kmatrix ]; then cache=/var/cache/uffd-kmatrix
else cache=${XDG_CACHE_HOME:-$HOME/.cache}/uffd-kmatrix
fi
mkdir -p "$cache/kernels"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }
apt_updated=0
apt_update() {
  [ $apt_updated = 0 ] || return 0
  note "apt-get update"
  as_root apt-get update -qq >&2 || die "apt-get update failed"
  apt_updated=1
}

# --- the kernel package ------------------------------------------------------------------------------

# Debian names the generic flavour linux-image-6.1.0-56-amd64 (bookworm) or
# linux-image-6.12.117+deb12-amd64 (bookworm-security); -cloud-amd64 has no 9p, -rt- is another kernel.
candidates() {
  local s=${series//./\\.}
  apt-cache pkgnames linux-image- 2>/dev/null \
    | grep -E "^linux-image-${s}(\.[0-9]+)*(-[0-9]+)?(\+deb[0-9]+)?-amd64\$" | sort -V || true
}

resolve_release() {
  if [[ $series =~ -amd64$ ]]; then echo "${series}"; return; fi
  local newest
  newest=$(candidates | tail -n 1)
  if [ -z "$newest" ]; then apt_update; newest=$(candidates | tail -n 1); fi
  if [ -z "$newest" ]; then
    # Offline or no such series in the lists: a kernel prepared earlier still does.
    newest=$(find "$cache/kernels" -mindepth 1 -maxdepth 1 -name "${series}[.-]*" -printf '%f\n' 2>/dev/null \
      | sed 's/@.*//' | grep -E "^${series//./\\.}[.-]" | sort -V | tail -n 1 || true)
    [ -n "$newest" ] || die "no linux-image-${series}.*-amd64 package known to apt (is bookworm-security in the sources?)"
    echo "$newest"; return
  fi
  echo "${newest#linux-image-}"
}

# Downloads a package into the current directory, refreshing the lists once if they are stale.
fetch() {
  local pkg=$1 opts=()
  if [ "$(id -u)" = 0 ]; then opts=(-o APT::Sandbox::User=root); fi
  if ! apt-get download -qq "${opts[@]}" "$pkg" >/dev/null 2>&1; then
    apt_update
    apt-get download -qq "${opts[@]}" "$pkg" >&2 || die "apt-get download $pkg failed"
  fi
}

# The bzImage payload, decompressed, is an ELF vmlinux that QEMU boots through its PVH note: under TCG
# that skips the real-mode setup and the in-guest decompression (about 2 s per boot). The header says
# where the payload is; its last 4 bytes are the uncompressed size, not part of the stream.
extract_vmlinux() {
  local bz=$1 out=$2 setup off len start magic
  [ "$(od -An -c -j $((0x202)) -N 4 "$bz" | tr -d ' ')" = HdrS ] || return 1
  setup=$(od -An -t u1 -j $((0x1f1)) -N 1 "$bz" | tr -d ' ')
  [ "$setup" != 0 ] || setup=4
  read -r off len < <(od -An -t u4 -j $((0x248)) -N 8 "$bz")
  start=$(( (setup + 1) * 512 + off ))
  magic=$(od -An -t x1 -j "$start" -N 4 "$bz" | tr -d ' ')
  local unpack
  case $magic in
    fd377a58) unpack=(xz -dc --single-stream) ;;
    28b52ffd) unpack=(zstd -dcq) ;;
    1f8b08*) unpack=(gzip -dc) ;;
    *) return 1 ;;
  esac
  command -v "${unpack[0]}" >/dev/null || return 1
  dd if="$bz" bs=1M iflag=skip_bytes,count_bytes skip="$start" count=$((len - 4)) status=none \
    | "${unpack[@]}" >"$out" 2>/dev/null || return 1
  [ "$(od -An -c -N 4 "$out" | tr -d ' ')" = 177ELF ]
}

# Modules the guest needs, and everything they depend on (from `depends=` in each .ko's .modinfo;
# no kmod needed). Built-in ones are skipped; the order printed is a valid load order.
WANTED_MODULES=(virtio_pci virtio_console 9pnet_virtio 9p overlay)
resolve_modules() {
  local moddir=$1 seen=" " order=()
  local builtin
  builtin=$(sed 's#.*/##; s/\.ko.*//; s/-/_/g' "$moddir/modules.builtin")
  visit() {
    local name=${1//-/_} path deps dep
    case $seen in *" $name "*) return ;; esac
    seen+="$name "
    if grep -qx "$name" <<<"$builtin"; then return; fi
    path=$(find "$moddir/kernel" -name "${name}.ko*" -o -name "${name//_/-}.ko*" | head -n 1)
    [ -n "$path" ] || die "module $name is neither built in nor shipped in $moddir"
    deps=$(modinfo_field "$path" depends)
    for dep in ${deps//,/ }; do visit "$dep"; done
    order+=("$path")
  }
  local m
  for m in "${WANTED_MODULES[@]}"; do visit "$m"; done
  printf '%s\n' "${order[@]}"
}
modinfo_field() {
  local path=$1 field=$2
  case $path in
    *.xz) xz -dc "$path" ;;
    *.zst) zstd -dcq "$path" ;;
    *.gz) gzip -dc "$path" ;;
    *) cat "$path" ;;
  esac | tr '\0' '\n' | sed -n "s/^${field}=//p" | head -n 1
}

# The guest's /init (busybox sh). Its inputs come from the kernel command line (kmatrix.*) and the
# control share (kmctl): cmd.sh to run, rw.list of read-write shares; it writes the exit status there.
write_init() {
  cat <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
say() { echo "kmatrix-init: $*" >/dev/console; }
fail() { say "FAILED: $*"; poweroff -f; }
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
while read -r m; do insmod "/modules/$m" || fail "insmod $m"; done </modules.list

opts=trans=virtio,version=9p2000.L,msize=$((512 * 1024))
mkdir -p /lower /ovl /new
mount -t 9p -o "$opts,ro,cache=loose" kmroot /lower || fail "mount the host root (9p)"
mount -t tmpfs -o mode=0755 ovl /ovl && mkdir /ovl/upper /ovl/work
mount -t overlay -o lowerdir=/lower,upperdir=/ovl/upper,workdir=/ovl/work overlay /new || fail "overlay"
mount -t proc proc /new/proc
mount -t sysfs sys /new/sys
mount -t devtmpfs dev /new/dev
mkdir -p /new/dev/pts /new/dev/shm /new/dev/hugepages
mount -t devpts -o newinstance,ptmxmode=0666 devpts /new/dev/pts
mount -t tmpfs -o mode=1777 shm /new/dev/shm
mount -t hugetlbfs hugetlbfs /new/dev/hugepages
mount -t cgroup2 cgroup2 /new/sys/fs/cgroup 2>/dev/null
for d in /tmp /var/tmp; do mount -t tmpfs -o mode=1777 tmp "/new$d"; done
mount -t tmpfs -o mode=0755 run /new/run
mkdir -p /new/run/kmctl
mount -t 9p -o "$opts,cache=none" kmctl /new/run/kmctl || fail "mount the control share"
i=0
while read -r dir; do
  mkdir -p "/new$dir"
  mount -t 9p -o "$opts,cache=loose" "kmrw$i" "/new$dir" || fail "mount $dir read-write"
  i=$((i + 1))
done </new/run/kmctl/rw.list
ip link set lo up
hostname "kmatrix-$(uname -r)"
# The RTC has whole seconds and the guest booted a moment ago: set the clock to the RTC's current
# second, rounded up, so files the host wrote never look like they come from the future.
rtc=$(cat /sys/class/rtc/rtc0/since_epoch 2>/dev/null) && date -s "@$((rtc + 1))" >/dev/null
ulimit -n 65536

out=/dev/null; err=/dev/null
for p in /sys/class/virtio-ports/*; do
  case $(cat "$p/name") in kmout) out=/dev/${p##*/} ;; kmerr) err=/dev/${p##*/} ;; esac
done
say "running the command"
chroot /new /bin/bash /run/kmctl/cmd.sh </dev/null >"$out" 2>"$err"
echo $? >/new/run/kmctl/rc
say "command exited $(cat /new/run/kmctl/rc)"
kill -KILL -1 2>/dev/null
sleep 0.1
sync
while read -r dir; do umount "/new$dir" 2>/dev/null || say "umount $dir failed"; done </new/run/kmctl/rw.list
umount /new/run/kmctl
poweroff -f
EOF
}

busybox_path() {
  local bb
  bb=$(find "$cache" -maxdepth 2 -path "$cache/busybox-*/busybox" | sort -V | tail -n 1)
  [ -n "$bb" ] && echo "$bb"
}

prepare_busybox() {
  [ -z "$(busybox_path || true)" ] || return 0
  local tmp
  tmp=$(mktemp -d "$cache/.busybox.XXXXXX")
  (cd "$tmp" && fetch busybox-static && dpkg -x busybox-static_*.deb root)
  local version
  version=$(dpkg-deb -f "$tmp"/busybox-static_*.deb Version | tr ':~' '__')
  mkdir -p "$tmp/out" && cp "$tmp/root/bin/busybox" "$tmp/out/busybox"
  mv "$tmp/out" "$cache/busybox-$version"
  rm -rf "$tmp"
}

# One directory per release and recipe (a hash of this file's guest-side code), so a changed /init
# rebuilds the initramfs without touching the download.
recipe=$( { declare -f write_init resolve_modules; echo "${WANTED_MODULES[*]}"; } | sha256sum | cut -c1-12)

prepare_kernel() {
  local release=$1 dir=$2
  local tmp
  tmp=$(mktemp -d "$cache/.prepare.XXXXXX")
  trap 'rm -rf "$tmp"' RETURN
  note "preparing $release"
  (cd "$tmp" && fetch "linux-image-$release")
  dpkg -x "$tmp"/linux-image-"$release"_*.deb "$tmp/root"
  local moddir=$tmp/root/lib/modules/$release bz=$tmp/root/boot/vmlinuz-$release
  [ -f "$bz" ] && [ -d "$moddir" ] || die "linux-image-$release has no vmlinuz or modules"
  grep -q '9p' "$moddir/modules.order" || die "linux-image-$release has no 9p (a cloud flavour?)"

  local init=$tmp/initramfs
  mkdir -p "$init"/{bin,dev,proc,sys,modules}
  cp "$(busybox_path)" "$init/bin/busybox"
  local path name modules
  modules=$(resolve_modules "$moddir")
  : >"$init/modules.list"
  while read -r path; do
    name=${path##*/}; name=${name%%.ko*}.ko
    case $path in
      *.xz) xz -dc "$path" ;; *.zst) zstd -dcq "$path" ;; *.gz) gzip -dc "$path" ;; *) cat "$path" ;;
    esac >"$init/modules/$name"
    echo "$name" >>"$init/modules.list"
  done <<<"$modules"
  write_init >"$init/init"
  chmod 0755 "$init/init"
  (cd "$init" && find . -mindepth 1 | "$init/bin/busybox" cpio -o -H newc >"$tmp/initramfs.cpio" 2>/dev/null)

  mkdir -p "$tmp/out"
  mv "$tmp/initramfs.cpio" "$tmp/out/"
  if extract_vmlinux "$bz" "$tmp/out/vmlinux"; then
    note "booting the extracted vmlinux (PVH)"
  else
    rm -f "$tmp/out/vmlinux"
    cp "$bz" "$tmp/out/bzImage"
  fi
  cp "$init/modules.list" "$tmp/out/"
  echo "$release" >"$tmp/out/release"
  rm -rf "$dir"
  mv "$tmp/out" "$dir"
  # Older releases of the same series, or older recipes, are superseded (a running VM has already read
  # its files).
  local other
  for other in "$cache"/kernels/*@*; do
    [ "$other" != "$dir" ] && [ -f "$other/release" ] || continue
    if [ "$(cut -d. -f1,2 <"$other/release")" = "$(cut -d. -f1,2 <<<"$release")" ]; then rm -rf "$other"; fi
  done
}

release=$(resolve_release)
kdir=$cache/kernels/$release@$recipe
if [ ! -f "$kdir/release" ]; then
  exec 9>"$cache/lock"
  flock 9
  prepare_busybox
  if [ ! -f "$kdir/release" ]; then prepare_kernel "$release" "$kdir"; fi
  flock -u 9
  exec 9>&-
fi
if [ $prepare_only = 1 ]; then echo "$release: $kdir"; exit 0; fi

# --- QEMU ----------------------------------------------------------------------------------------------

if ! command -v qemu-system-x86_64 >/dev/null; then
  note "installing qemu-system-x86"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null 2>&1 \
    || { apt_update; as_root apt-get install -y -qq --no-install-recommends qemu-system-x86 >&2; } \
    || die "cannot install qemu-system-x86"
fi

accel=${KMATRIX_ACCEL:-auto}
if [ "$accel" = auto ]; then
  accel=tcg
  if { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; } && [ -r /dev/kvm ] && [ -w /dev/kvm ]; then accel=kvm; fi
fi
case $accel in
  kvm) machine=(-accel kvm -cpu host) ;;
  tcg) machine=(-accel tcg,thread=multi -cpu "${KMATRIX_CPU:-max,la57=off}") ;;
  *) die "KMATRIX_ACCEL must be auto, tcg or kvm" ;;
esac

run=$(mktemp -d "${TMPDIR:-/tmp}/kmatrix.XXXXXX")
qemu_pid='' cat_pids=()
cleanup() {
  [ -z "$qemu_pid" ] || kill "$qemu_pid" 2>/dev/null || true
  for p in "${cat_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The read-write shares: this repository, the cwd, and what the caller asked for; a directory inside
# another one is covered by it.
cwd=$(pwd -P)
all_rw=("$REPO")
[ "$cwd" = / ] || all_rw+=("$cwd")
for d in "${rw_dirs[@]}"; do [ -z "$d" ] || all_rw+=("$(cd "$d" && pwd -P)"); done
mapfile -t shares < <(printf '%s\n' "${all_rw[@]}" | sort -u | awk '{ for (i = 1; i <= n; i++) if (index($0 "/", kept[i] "/") == 1) next; kept[++n] = $0; print }')

mkdir "$run/ctl"
printf '%s\n' "${shares[@]}" >"$run/ctl/rw.list"
{
  # The caller's exported environment. TMPDIR is dropped when it is not there in the guest.
  export -p | grep -Ev '^declare -[a-zA-Z]*x[a-zA-Z]* (BASHOPTS|SHELLOPTS|BASH_VERSINFO|EUID|PPID|UID)='
  echo 'if [ -n "${TMPDIR:-}" ] && [ ! -d "$TMPDIR" ]; then unset TMPDIR; fi'
  printf 'cd -- %q || exit 125\n' "$cwd"
  printf 'exec'; printf ' %q' "$@"; printf '\n'
} >"$run/ctl/cmd.sh"

share_args=(-fsdev "local,id=kmroot,path=/,readonly=on,security_model=none,multidevs=remap"
  -device "virtio-9p-pci,fsdev=kmroot,mount_tag=kmroot"
  -fsdev "local,id=kmctl,path=$run/ctl,security_model=none"
  -device "virtio-9p-pci,fsdev=kmctl,mount_tag=kmctl")
model=none
[ "$(id -u)" != 0 ] || model=passthrough
i=0
for d in "${shares[@]}"; do
  share_args+=(-fsdev "local,id=kmrw$i,path=$d,security_model=$model,multidevs=remap"
    -device "virtio-9p-pci,fsdev=kmrw$i,mount_tag=kmrw$i")
  i=$((i + 1))
done

# stdout/stderr: virtio-serial ports on FIFOs. Never a stdio chardev: EOF on the host's stdin marks the
# port disconnected and guest writes then block forever. QEMU's pipe chardev reads NAME.in (never
# written here) and writes NAME.out.
for p in out err; do mkfifo "$run/$p.in" "$run/$p.out"; done
cat "$run/out.out" & cat_pids+=($!)
cat "$run/err.out" >&2 & cat_pids+=($!)

kernel=$kdir/vmlinux
[ -f "$kernel" ] || kernel=$kdir/bzImage
cmdline="console=ttyS0 quiet loglevel=4 panic=-1 oops=panic mitigations=off rdinit=/init"
[ "$hugepages" = 0 ] || cmdline+=" hugepages=$hugepages"
[ -z "${KMATRIX_APPEND:-}" ] || cmdline+=" $KMATRIX_APPEND"

note "booting $release ($accel, $cpus vCPUs, ${memory} MiB) for: $*"
set +e
timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 \
  -nodefaults -no-user-config -machine q35 "${machine[@]}" -smp "$cpus" -m "$memory" \
  -display none -monitor none -no-reboot \
  -serial "file:$run/console.log" \
  -kernel "$kernel" -initrd "$kdir/initramfs.cpio" -append "$cmdline" \
  "${share_args[@]}" \
  -device virtio-serial-pci \
  -chardev "pipe,id=kmout,path=$run/out" -device "virtserialport,chardev=kmout,name=kmout" \
  -chardev "pipe,id=kmerr,path=$run/err" -device "virtserialport,chardev=kmerr,name=kmerr" \
  </dev/null >"$run/qemu.log" 2>&1 &
qemu_pid=$!
wait "$qemu_pid"
qemu_status=$?
qemu_pid=''
set -e

# The readers end when QEMU closes the FIFOs; one still blocked in open() means QEMU never got that far.
for _ in $(seq 50); do
  alive=0
  for p in "${cat_pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ $alive = 1 ] || break
  sleep 0.1
done

[ "${KMATRIX_VERBOSE:-0}" != 1 ] || { echo "--- $release console" >&2; cat "$run/console.log" >&2; }
tail_console() {
  echo "$PROG: $1; the console of $release ends with:" >&2
  tail -n 40 "$run/console.log" >&2 || true
  if [ -s "$run/qemu.log" ]; then echo "--- qemu:" >&2; tail -n 20 "$run/qemu.log" >&2; fi
}
if [ $qemu_status = 124 ] || [ $qemu_status = 137 ]; then
  tail_console "timed out after ${timeout_s}s"
  exit 124
fi
if [ ! -s "$run/ctl/rc" ]; then
  tail_console "the guest failed (QEMU exit $qemu_status) before the command finished"
  exit 125
fi
exit "$(cat "$run/ctl/rc")"
}
