#!/usr/bin/env bash
# drover's test lab: N small Debian hosts on this machine, each booted by
# systemd-nspawn with systemd as PID 1, its own system bus and an sshd, each
# in its own network namespace on a private bridge. The recipe and the
# measured facts behind it are in shared/LAB.md; tests/lab/README.md says how
# to use it.
#
#   lab.sh deps                 install the machine's packages (if missing)
#   lab.sh image                build the cached host image (if missing/stale)
#   lab.sh up [N]               boot lab-1..lab-N (default 4, max 40)
#   lab.sh down                 tear everything down (idempotent)
#   lab.sh stop-host HOST [--kill]   power one host off (state kept)
#   lab.sh start-host HOST      boot it again, wait for ssh
#   lab.sh status               hosts and whether each answers ssh
#
# Only stdout of `up` carries data (the run dir); all progress goes to stderr
# so callers can do RUNDIR=$(lab.sh up 4).
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")

IMAGE=$(readlink -m "${DROVER_LAB_IMAGE:-/var/cache/drover-lab/image}")
CACHE_DIR=$(dirname "$IMAGE")
# The image embeds the public half, so the key pair lives beside the image
# and is made once; a new key means a new image (it is part of the stamp).
LAB_KEY=$CACHE_DIR/id_ed25519
RUNDIR=$(readlink -m "${DROVER_LAB_DIR:-/run/drover-lab}")
# One lock for everything that changes the lab or the image: cargo test may
# start several helpers at once, and two `up`s racing would share a bridge.
LOCK_FILE=$CACHE_DIR/lab.lock

BRIDGE=drover-br0
NET=10.77.0                 # bridge .1, host i at .(10+i)
CG_NAME=drover-lab          # cgroup dir under every hierarchy
MAX_HOSTS=40
SUITE=bookworm
# man-db renders the generated man pages and dpkg-dev (dpkg-shlibdeps)
# gives the .deb its libc6 dependency (tests/offline/completions.rs, tests/lab/package.rs).
# chromium (and the fonts it only recommends) runs the status page's
# browser test (tests/lab/page.rs). zsh and fish check the completion
# scripts' syntax (tests/offline/completions.rs). prometheus and
# prometheus-node-exporter scrape `drover serve` and an apply's textfile
# (tests/lab/observability.rs); each test starts its own on loopback.
# nats-server runs cluster mode's 3-node JetStream cluster and leaf node
# (tests/lab/cluster.rs), also on loopback; faketime runs a replica on a
# clock an hour off, which it must notice against the NATS server's.
MACHINE_PACKAGES=(debootstrap systemd-container openssh-client iproute2 procps man-db dpkg-dev chromium fonts-liberation zsh fish prometheus prometheus-node-exporter nats-server faketime)
IMAGE_PACKAGES=systemd,systemd-sysv,dbus,openssh-server,python3,iproute2,procps,sudo,man-db
# Without these masks each host holds many inotify instances and past ~22
# hosts boots die with "Too many open files" (max_user_instances is shared).
MASKED_UNITS=(systemd-ask-password-console.path systemd-ask-password-wall.path
	user@.service getty@.service console-getty.service systemd-logind.service
	systemd-firstboot.service)
# Bump when the recipe changes in a way the hash below cannot see (e.g. a
# different Debian snapshot is wanted).
IMAGE_VERSION=1

UP_TIMEOUT=${DROVER_LAB_TIMEOUT:-90}    # seconds for a whole `up`/`start-host`
STOP_TIMEOUT=10                         # orderly poweroff before SIGKILL
NSPAWN_RUN=/run/systemd/nspawn          # where nspawn keeps state on the machine

log() { printf 'lab: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# Monotonic-enough wall clock in milliseconds (EPOCHREALTIME is bash 5; strip
# the locale's decimal separator whatever it is).
now_ms() {
	local t=${EPOCHREALTIME//[^0-9]/}
	echo $((t / 1000))
}
fmt_ms() { printf '%d.%d s' $(($1 / 1000)) $(($1 % 1000 / 100)); }

host_name() { echo "lab-$1"; }
host_addr() { echo "$NET.$((10 + $1))"; }
host_index() {
	[[ $1 =~ ^lab-([0-9]+)$ ]] || return 1
	echo "${BASH_REMATCH[1]}"
}
host_veth() { echo "drv-$1"; } # machine side of the pair; <= 15 chars
# A fixed, locally administered MAC per host, as a real NIC keeps across
# reboots: with a random one, after stop-host/start-host the machine kept
# sending to the old MAC until its ARP entry expired (measured 38-48 s).
host_mac() { printf '02:77:00:00:00:%02x' "$1"; }

# ---------------------------------------------------------------- exit hooks
# Several commands need "undo this if we fail"; one EXIT trap runs the hooks
# registered so far, newest first.
EXIT_HOOKS=()
run_exit_hooks() {
	local rc=$? i
	for ((i = ${#EXIT_HOOKS[@]} - 1; i >= 0; i--)); do
		eval "${EXIT_HOOKS[i]}" || true
	done
	exit "$rc"
}
trap run_exit_hooks EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
push_hook() { EXIT_HOOKS+=("$1"); }
pop_hook() { unset 'EXIT_HOOKS[${#EXIT_HOOKS[@]}-1]'; }

take_lock() {
	mkdir -p "$CACHE_DIR"
	exec 9>>"$LOCK_FILE"
	flock -w 600 9 || die "another lab.sh holds $LOCK_FILE"
}

need_root() { [[ $EUID -eq 0 ]] || die "must run as root"; }

check_paths() {
	# overlayfs options are split on ',' and ':'; keep paths simple.
	[[ $IMAGE != *[,:]* && $RUNDIR != *[,:]* ]] || die "image and run dir paths must not contain ',' or ':'"
	[[ $RUNDIR != / && $RUNDIR != /run && $RUNDIR != /tmp ]] || die "refusing DROVER_LAB_DIR=$RUNDIR"
}

# ---------------------------------------------------------------- processes
# PID 1 on this machine reaps orphans only every few seconds, so an exited
# process can linger as a zombie: treat zombies as gone.
pid_alive() {
	local st
	[[ $1 =~ ^[0-9]+$ ]] || return 1
	# (a failed $(<file) would end the script under set -e; read does not)
	{ read -r st <"/proc/$1/stat"; } 2>/dev/null || return 1
	st=${st##*) }
	st=${st%% *}
	[[ $st != Z && $st != X ]]
}

# The supervisors are orphans (their `up` has exited), so once they exit
# they stay zombies until PID 1 gets round to reaping them (seconds here).
# `down` waits for that, bounded, so it leaves not even a <defunct> behind.
wait_reaped() {
	local pid st deadline=$((EPOCHSECONDS + 6))
	for pid in "$@"; do
		[[ $pid =~ ^[0-9]+$ ]] || continue
		while ((EPOCHSECONDS < deadline)); do
			st=""
			{ read -r st <"/proc/$pid/stat"; } 2>/dev/null || break
			st=${st##*) }
			[[ ${st%% *} == Z ]] || break # gone, or the pid was reused
			sleep 0.1
		done
	done
}

# A recorded pid is only ours if it still runs what we started (pids recycle).
pid_cmdline_has() {
	local cmd
	cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
	[[ $cmd == *"$2"* ]]
}

read_pid() {
	local pid=""
	{ read -r pid <"$1"; } 2>/dev/null || true
	echo "$pid"
}

# pid of the host's running nspawn, or nothing
nspawn_pid() {
	local pid comm=""
	pid=$(read_pid "$RUNDIR/$1/pid")
	[[ -n $pid ]] && pid_alive "$pid" || return 0
	{ read -r comm <"/proc/$pid/comm"; } 2>/dev/null || return 0
	[[ $comm != systemd-nspawn ]] || echo "$pid"
}

supervisor_pid() {
	local pid
	pid=$(read_pid "$RUNDIR/$1/supervisor.pid")
	if [[ -n $pid ]] && pid_alive "$pid" && pid_cmdline_has "$pid" "_supervise $1 "; then
		echo "$pid"
	fi
}

# ---------------------------------------------------------------- cgroups
# Hierarchies a host gets its own cgroup in. On this machine (hybrid) that is
# name=systemd and the unified one: nspawn needs both, and without its own
# cgroup every host would share the root cgroup.
cgroup_roots() {
	if [[ -d /sys/fs/cgroup/unified && -d /sys/fs/cgroup/systemd ]]; then
		echo /sys/fs/cgroup/systemd /sys/fs/cgroup/unified
	elif [[ -e /sys/fs/cgroup/cgroup.controllers ]]; then
		echo /sys/fs/cgroup
	elif [[ -d /sys/fs/cgroup/systemd ]]; then
		echo /sys/fs/cgroup/systemd
	else
		die "no systemd cgroup hierarchy under /sys/fs/cgroup"
	fi
}

host_cgroups() {
	local root
	for root in $(cgroup_roots); do echo "$root/$CG_NAME/$1"; done
}

# Every dir the lab may own in any hierarchy (nspawn/systemd may add some in
# v1 controllers too), for the sweep in `down`.
all_lab_cgroups() {
	local d
	for d in /sys/fs/cgroup/"$CG_NAME" /sys/fs/cgroup/*/"$CG_NAME"; do
		[[ -d $d ]] && echo "$d"
	done
	return 0
}

# SIGKILL whatever is left in the given cgroup trees, then remove them
# depth-first. This is what guarantees no stray process survives: it catches
# a container whose nspawn was killed (its init is orphaned, not killed).
cgroup_sweep() {
	local -a dirs=() pids
	local d try
	for d in "$@"; do [[ -d $d ]] && dirs+=("$d"); done
	((${#dirs[@]})) || return 0
	for ((try = 0; try < 50; try++)); do
		mapfile -t pids < <(find "${dirs[@]}" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
		((${#pids[@]})) || break
		kill -KILL "${pids[@]}" 2>/dev/null || true
		sleep 0.1
	done
	# rmdir can fail for a moment while killed tasks are still being released
	for ((try = 0; try < 50; try++)); do
		for d in "${dirs[@]}"; do
			[[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
		done
		local left=0
		for d in "${dirs[@]}"; do [[ -d $d ]] && left=1; done
		((left)) || return 0
		sleep 0.1
	done
	log "warning: could not remove cgroups: ${dirs[*]}"
}

# ---------------------------------------------------------------- deps
cmd_deps() {
	local -a missing=()
	local p
	for p in "${MACHINE_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	log "installing ${missing[*]}"
	# dpkg chatter goes to a log, shown only when something fails
	local aptlog
	aptlog=$(mktemp /tmp/drover-lab-apt.XXXXXX)
	if ! {
		DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
	} >"$aptlog" 2>&1; then
		tail -n 30 "$aptlog" >&2
		rm -f "$aptlog"
		die "installing ${missing[*]} failed"
	fi
	rm -f "$aptlog"
}

# ---------------------------------------------------------------- image
# The Debian mirror this machine already uses (it is the one that is
# reachable): the first deb822 stanza whose Suites has the suite itself, else
# a one-line sources.list entry, else Debian's default.
apt_mirror() {
	local m=""
	if [[ -n ${DROVER_LAB_MIRROR:-} ]]; then
		echo "$DROVER_LAB_MIRROR"
		return
	fi
	if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
		m=$(awk -v suite="$SUITE" 'BEGIN { RS = "" }
			{
				uri = ""; ok = 0; deb = 0
				n = split($0, L, "\n")
				for (i = 1; i <= n; i++) {
					if (L[i] ~ /^Types:/ && L[i] ~ /[ \t]deb([ \t]|$)/) deb = 1
					if (L[i] ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", L[i]); split(L[i], u, /[ \t]+/); uri = u[1] }
					if (L[i] ~ /^Suites:/) { sub(/^Suites:/, "", L[i]); m = split(L[i], s, /[ \t]+/); for (j = 1; j <= m; j++) if (s[j] == suite) ok = 1 }
				}
				if (deb && ok && uri != "") { print uri; exit }
			}' /etc/apt/sources.list.d/debian.sources)
	fi
	if [[ -z $m && -r /etc/apt/sources.list ]]; then
		m=$(sed -E 's/\[[^]]*\]//' /etc/apt/sources.list |
			awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2; exit }')
	fi
	echo "${m:-http://deb.debian.org/debian}"
}

ensure_key() {
	if [[ ! -f $LAB_KEY || ! -f $LAB_KEY.pub ]]; then
		mkdir -p "$CACHE_DIR"
		rm -f "$LAB_KEY" "$LAB_KEY.pub"
		ssh-keygen -q -t ed25519 -N '' -C drover-lab -f "$LAB_KEY"
		log "generated lab key $LAB_KEY"
	fi
}

# Everything done to the debootstrapped tree. Its text is hashed into the
# stamp, so editing this function rebuilds the image on the next `up`.
image_customize() {
	local r=$1 i unit

	# root must be traversable by sshd's privsep user and by `drover`
	# (mktemp -d made it 0700)
	chmod 755 "$r"

	# --hostname must win; a shared /etc/hostname would name every host alike
	rm -f "$r/etc/hostname"
	# Every host resolves every lab name without DNS (sudo looks up its own
	# hostname; there is no resolver in the lab and no route out of it).
	{
		echo "127.0.0.1 localhost"
		echo "::1 localhost ip6-localhost ip6-loopback"
		for ((i = 1; i <= MAX_HOSTS; i++)); do echo "$(host_addr "$i") $(host_name "$i")"; done
	} >"$r/etc/hosts"
	rm -f "$r/etc/resolv.conf"
	echo "# drover lab: no DNS, names are in /etc/hosts" >"$r/etc/resolv.conf"
	# Empty machine-id: each boot gets its own (from nspawn's uuid), so hosts
	# are told apart; not "uninitialized", which would mean first boot.
	: >"$r/etc/machine-id"
	ln -sfn /etc/machine-id "$r/var/lib/dbus/machine-id"

	# Journal in the host's /run (memory), as with --volatile=overlay: a
	# persistent one preallocates 8 MB a host on disk, which made `down` of
	# 30 hosts 2 s slower just deleting it.
	mkdir -p "$r/etc/systemd/journald.conf.d"
	printf '[Journal]\nStorage=volatile\n' >"$r/etc/systemd/journald.conf.d/drover-lab.conf"

	cat >"$r/etc/ssh/sshd_config.d/drover-lab.conf" <<-'EOF'
		# drover test lab. Keys only; MaxSessions high so tests can probe many
		# channels on one connection (real hosts keep the default 10); no DNS.
		PermitRootLogin prohibit-password
		PasswordAuthentication no
		MaxSessions 64
		UseDNS no
		# A login whose server refuses stream forwarding, as hardened hosts
		# do: drover must fall back to systemd-stdio-bridge for it.
		Match User nofwd
			AllowStreamLocalForwarding no
	EOF
	# One host key set for all hosts, made here, so known_hosts can be written
	# before any host boots.
	chroot "$r" ssh-keygen -A >/dev/null

	install -d -m 700 "$r/root/.ssh"
	install -m 600 "$LAB_KEY.pub" "$r/root/.ssh/authorized_keys"

	# `become: true` is tested as this user through `sudo -n`
	chroot "$r" useradd --create-home --shell /bin/bash drover
	install -d -m 700 "$r/home/drover/.ssh"
	install -m 600 "$LAB_KEY.pub" "$r/home/drover/.ssh/authorized_keys"
	chroot "$r" chown -R drover:drover /home/drover/.ssh
	echo 'drover ALL=(ALL:ALL) NOPASSWD: ALL' >"$r/etc/sudoers.d/drover"
	chmod 440 "$r/etc/sudoers.d/drover"
	chroot "$r" visudo -cqf /etc/sudoers.d/drover
	# The forwarding-refused login (see sshd_config.d above); no sudo.
	chroot "$r" useradd --create-home --shell /bin/bash nofwd
	install -d -m 700 "$r/home/nofwd/.ssh"
	install -m 600 "$LAB_KEY.pub" "$r/home/nofwd/.ssh/authorized_keys"
	chroot "$r" chown -R nofwd:nofwd /home/nofwd/.ssh

	# The services drover's tests act on.
	mkdir -p "$r/srv/demo-web"
	echo "drover lab demo-web" >"$r/srv/demo-web/index.html"
	cat >"$r/etc/systemd/system/demo-web.service" <<-'EOF'
		[Unit]
		Description=drover lab: demo web server (python3 http.server on :8080)

		[Service]
		ExecStart=/usr/bin/python3 -m http.server 8080 --directory /srv/demo-web

		[Install]
		WantedBy=multi-user.target
	EOF
	cat >"$r/etc/systemd/system/demo-worker.service" <<-'EOF'
		[Unit]
		Description=drover lab: demo worker (sleeps forever)

		[Service]
		ExecStart=/bin/sleep infinity

		[Install]
		WantedBy=multi-user.target
	EOF
	cat >"$r/etc/systemd/system/demo-idle.service" <<-'EOF'
		[Unit]
		Description=drover lab: installed but not enabled

		[Service]
		ExecStart=/bin/sleep infinity

		[Install]
		WantedBy=multi-user.target
	EOF
	# oneshot so that `start` itself reports the failure (a simple service
	# would "start" fine and fail a moment later)
	cat >"$r/etc/systemd/system/demo-broken.service" <<-'EOF'
		[Unit]
		Description=drover lab: start always fails

		[Service]
		Type=oneshot
		ExecStart=/bin/false

		[Install]
		WantedBy=multi-user.target
	EOF
	chroot "$r" systemctl enable --quiet demo-web.service demo-worker.service
	for unit in "${MASKED_UNITS[@]}"; do
		chroot "$r" systemctl mask --quiet "$unit"
	done

	# drover's D-Bus-over-ssh carrier needs this
	[[ -x $r/usr/bin/systemd-stdio-bridge ]] || die "image has no /usr/bin/systemd-stdio-bridge"

	# smaller image: debootstrap keeps its .debs and lists
	find "$r/var/cache/apt/archives" -name '*.deb' -delete
	find "$r/var/lib/apt/lists" -mindepth 1 -maxdepth 1 -type f -delete
}

image_stamp() {
	local recipe key
	recipe=$({
		declare -f image_customize host_addr host_name
		echo "$IMAGE_PACKAGES ${MASKED_UNITS[*]} $SUITE $MAX_HOSTS"
	} | sha256sum | cut -c1-16)
	key=$(ssh-keygen -lf "$LAB_KEY.pub" | awk '{print $2}')
	echo "drover-lab-image version=$IMAGE_VERSION suite=$SUITE recipe=$recipe key=$key"
}

image_current() {
	[[ -f $LAB_KEY.pub && -f $IMAGE/etc/drover-lab-image ]] &&
		[[ $(<"$IMAGE/etc/drover-lab-image") == "$(image_stamp)" ]]
}

# Unmount whatever is mounted at or below $1 (deepest first).
umount_below() {
	local -a mps
	local mp
	mapfile -t mps < <(awk -v p="$1" '$2 == p || index($2, p "/") == 1 { print $2 }' /proc/mounts | sort -r)
	for mp in "${mps[@]}"; do
		umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || log "warning: cannot unmount $mp"
	done
}

discard_dir() {
	[[ -n $1 && -e $1 ]] || return 0
	umount_below "$1"
	rm -rf --one-file-system "$1"
}

cmd_image() {
	local tmp old mirror t0 buildlog
	ensure_key
	if image_current; then
		log "image up to date: $IMAGE"
		return 0
	fi
	if lab_exists; then
		die "the image is missing or stale but a lab is using it; run 'lab.sh down' first"
	fi
	cmd_deps
	mirror=$(apt_mirror)
	t0=$(now_ms)
	log "building image from $mirror (about a minute)"
	# Build next to the final place (same filesystem) and rename when done,
	# so an interrupted build never leaves a half image that looks usable.
	tmp=$(mktemp -d "$CACHE_DIR/.image-build.XXXXXX")
	push_hook "discard_dir '$tmp'"
	buildlog=$CACHE_DIR/image-build.log
	if ! debootstrap --variant=minbase --include="$IMAGE_PACKAGES" \
		"$SUITE" "$tmp" "$mirror" >"$buildlog" 2>&1; then
		tail -n 20 "$buildlog" >&2
		die "debootstrap failed (log: $buildlog)"
	fi
	umount_below "$tmp" # debootstrap normally unmounts; be sure
	image_customize "$tmp"
	image_stamp >"$tmp/etc/drover-lab-image"
	if [[ -e $IMAGE ]]; then
		old=$CACHE_DIR/.image-old.$$
		mv -T "$IMAGE" "$old"
		mv -T "$tmp" "$IMAGE"
		discard_dir "$old"
	else
		mv -T "$tmp" "$IMAGE"
	fi
	pop_hook
	log "image built in $(fmt_ms $(($(now_ms) - t0))): $IMAGE ($(du -sh "$IMAGE" | cut -f1))"
}

# ---------------------------------------------------------------- network
bridge_up() {
	ip link show "$BRIDGE" &>/dev/null || ip link add "$BRIDGE" type bridge
	ip addr replace "$NET.1/24" dev "$BRIDGE"
	ip link set "$BRIDGE" up
}

# The host's netns holds eth0 with its address and no default route: the
# lab can reach the machine and its peers on the bridge and nothing else.
host_net_up() {
	local h=$1 i veth
	i=$(host_index "$h")
	veth=$(host_veth "$h")
	ip netns add "$h"
	ip link add "$veth" type veth peer name eth0 address "$(host_mac "$i")" netns "$h"
	ip link set "$veth" master "$BRIDGE" up
	ip -n "$h" addr add "$(host_addr "$i")/24" dev eth0
	# and forget whatever the machine remembered for this address anyway
	ip neigh flush to "$(host_addr "$i")" dev "$BRIDGE" 2>/dev/null || true
	ip -n "$h" link set lo up
	ip -n "$h" link set eth0 up
}

host_net_down() {
	local h=$1
	ip link del "$(host_veth "$h")" 2>/dev/null || true
	ip netns del "$h" 2>/dev/null || true
}

# ---------------------------------------------------------------- hosts
# Each host's root is an overlay of the shared read-only image with an upper
# dir of its own under RUNDIR. Unlike --volatile=overlay (upper on a tmpfs
# inside nspawn) it outlives the nspawn process, so a stop-host/start-host
# or an in-host reboot keeps the host's changes ("reboot persists state");
# `down` throws it away.
host_fs_up() {
	local d=$RUNDIR/$1
	mkdir -p "$d/upper" "$d/work" "$d/root" "$d/dbus"
	if ! mountpoint -q "$d/root"; then
		mount -t overlay "drover-lab-$1" \
			-o "lowerdir=$IMAGE,upperdir=$d/upper,workdir=$d/work" "$d/root"
	fi
	# nspawn names its lock file for -D after the dir's device:inode and
	# leaves it behind; remember the name so host_release can remove it
	stat -c '%d:%i' "$d/root" >"$d/nspawn-lock-id"
}

host_boot() {
	local h=$1 d=$RUNDIR/$1 cg
	for cg in $(host_cgroups "$h"); do mkdir -p "$cg"; done
	host_net_up "$h"
	host_fs_up "$h"
	rm -f "$d/exit" "$d/stopping" "$d/pid" "$d/supervisor.pid"
	# setsid: the host must outlive this script and not get the caller's
	# Ctrl-C or process-group kill (`down` owns its end). fd 9 (the lock)
	# must not be inherited or the lock would be held as long as the host.
	setsid bash "$SELF" _supervise "$h" </dev/null >>"$d/console.log" 2>&1 9>&- &
}

# Runs detached, one per host: boots nspawn and boots it again when the host
# reboots itself (nspawn exits 133), like systemd-nspawn@.service would.
cmd__supervise() {
	local h=$1 d=$RUNDIR/$1 pid rc cg
	local -a cgs
	mapfile -t cgs < <(host_cgroups "$h")
	echo $$ >"$d/supervisor.pid"
	while :; do
		echo "lab: $(date '+%F %T') booting $h"
		(
			# own cgroup in every hierarchy before exec: nspawn (--keep-unit)
			# builds the container's cgroup tree under the one it runs in
			for cg in "${cgs[@]}"; do echo "$BASHPID" >"$cg/cgroup.procs"; done
			# Not `ip netns exec`: it remounts /sys, the cgroup mounts vanish
			# and nspawn fails; --network-namespace-path joins the netns.
			# --register=no --keep-unit: there is no systemd here.
			exec systemd-nspawn -q --boot -D "$d/root" \
				--register=no --keep-unit -M "$h" --hostname="$h" \
				--network-namespace-path="/run/netns/$h" \
				--bind="$d/dbus:/run/dbus" \
				--resolv-conf=off --link-journal=no --console=read-only
		) &
		pid=$!
		echo "$pid" >"$d/pid"
		rc=0
		wait "$pid" || rc=$?
		echo "lab: $(date '+%F %T') nspawn for $h exited with status $rc"
		if [[ $rc -eq 133 && ! -e $d/stopping ]]; then
			echo "lab: $(date '+%F %T') $h rebooted itself; booting it again"
			continue
		fi
		break
	done
	rm -f "$d/pid"
	echo "$rc" >"$d/exit"
}

# Wait until one host answers ssh and its manager has finished booting.
wait_host() {
	local h=$1 deadline=$2 addr state remain
	addr=$(host_addr "$(host_index "$h")")
	while :; do
		remain=$((deadline - EPOCHSECONDS))
		((remain > 0)) || return 1
		[[ -e $RUNDIR/$h/exit ]] && return 2
		[[ -d $RUNDIR/$h ]] || return 3 # torn down under us
		# A bare TCP connect is far cheaper than starting ssh; 30 hosts polled
		# with ssh would eat the CPU the boots need.
		# shellcheck disable=SC2016 # $1 is expanded by the inner bash
		if timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/22"' _ "$addr" 2>/dev/null; then
			state=$(timeout "$remain" ssh -F "$RUNDIR/ssh_config" "$h" \
				systemctl is-system-running --wait </dev/null 2>/dev/null) || true
			case $state in
			running | degraded)
				echo "$state" >"$RUNDIR/$h/state"
				return 0
				;;
			esac
		fi
		sleep 0.2
	done
}

# Wait for all given hosts in parallel; on failure show what their consoles
# said.
wait_hosts() {
	local deadline=$1 h i rc failed=0
	shift
	local -a hosts=("$@") pids=()
	for h in "${hosts[@]}"; do
		wait_host "$h" "$deadline" &
		pids+=($!)
	done
	WAITERS=("${pids[@]}")
	for i in "${!hosts[@]}"; do
		rc=0
		wait "${pids[i]}" || rc=$?
		((rc)) || continue
		# the console tail of the first few says why; more is noise
		if ((failed++ < 3)); then
			if ((rc == 2)); then
				log "${hosts[i]}: nspawn exited (status $(<"$RUNDIR/${hosts[i]}/exit")); console:"
			else
				log "${hosts[i]}: not up within ${UP_TIMEOUT}s; console:"
			fi
			tail -n 8 "$RUNDIR/${hosts[i]}/console.log" 2>/dev/null |
				sed 's/\x1b\[[0-9;]*m//g; s/^/    /' >&2 || true
		else
			log "${hosts[i]}: not up either"
		fi
	done
	((failed == 0))
}

# Power hosts off: orderly first (SIGTERM makes nspawn send SIGRTMIN+3 to
# the host's systemd, which shuts down), SIGKILL after STOP_TIMEOUT, then
# kill whatever is left in their cgroups. $1 = TERM or KILL.
stop_hosts() {
	local sig=$1 h pid deadline alive
	shift
	((${#@})) || return 0
	for h in "$@"; do
		[[ -d $RUNDIR/$h ]] && touch "$RUNDIR/$h/stopping"
		pid=$(nspawn_pid "$h")
		if [[ -n $pid ]]; then kill "-$sig" "$pid" 2>/dev/null || true; fi
	done
	deadline=$((EPOCHSECONDS + STOP_TIMEOUT))
	while :; do
		alive=()
		for h in "$@"; do
			pid=$(nspawn_pid "$h")
			[[ -n $pid ]] && alive+=("$h:$pid")
		done
		((${#alive[@]})) || break
		if ((EPOCHSECONDS >= deadline)); then
			log "no orderly poweroff within ${STOP_TIMEOUT}s: killing ${alive[*]%%:*}"
			for h in "${alive[@]}"; do kill -KILL "${h##*:}" 2>/dev/null || true; done
			break
		fi
		sleep 0.1
	done
	# the supervisors exit by themselves once nspawn is gone
	deadline=$((EPOCHSECONDS + 3))
	for h in "$@"; do
		while pid=$(supervisor_pid "$h") && [[ -n $pid ]]; do
			if ((EPOCHSECONDS >= deadline)); then
				kill -KILL "$pid" 2>/dev/null || true
				break
			fi
			sleep 0.1
		done
	done
	for h in "$@"; do
		# shellcheck disable=SC2046 # one path per hierarchy, no spaces
		cgroup_sweep $(host_cgroups "$h")
		rm -f "$RUNDIR/$h/pid" "$RUNDIR/$h/supervisor.pid"
	done
}

# Everything after the processes are gone: mounts, network, stale socket.
host_release() {
	local h=$1 d=$RUNDIR/$1 id
	[[ -d $d ]] && umount_below "$d/root"
	host_net_down "$h"
	[[ -d $d/dbus ]] && find "$d/dbus" -mindepth 1 -delete 2>/dev/null
	# What nspawn leaves on the machine: it only cleans its propagation dir
	# when /run is a tmpfs ("Attempted to remove disk file system"), and /run
	# here is not; and its image lock file.
	discard_dir "$NSPAWN_RUN/propagate/$h"
	id=$(read_pid "$d/nspawn-lock-id")
	[[ -n $id ]] && rm -f "$NSPAWN_RUN/locks/inode-$id"
	rm -f "$d/state" "$d/nspawn-lock-id"
	return 0
}

# Hosts named in the lab's files, or leftovers found on the machine (a
# failed `up` may have died before writing RUNDIR/hosts).
known_hosts_list() {
	{
		[[ -f $RUNDIR/hosts ]] && awk '{ print $1 }' "$RUNDIR/hosts"
		local d
		for d in "$RUNDIR"/lab-*; do [[ -d $d ]] && basename "$d"; done
		ip netns list 2>/dev/null | awk '{ print $1 }'
		ip -o link show 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | sed -n 's/^drv-//p'
		for d in $(all_lab_cgroups); do
			for h in "$d"/lab-*; do [[ -d $h ]] && basename "$h"; done
		done
	} 2>/dev/null | grep -E '^lab-[0-9]+$' | sort -u -V || true
}

lab_exists() {
	[[ -e $RUNDIR ]] || ip link show "$BRIDGE" &>/dev/null || [[ -n $(known_hosts_list) ]]
}

teardown_all() {
	local -a hosts
	local h d t0
	t0=$(now_ms)
	mapfile -t hosts < <(known_hosts_list)
	local -a sups=()
	for h in "${hosts[@]}"; do sups+=("$(read_pid "$RUNDIR/$h/supervisor.pid")"); done
	stop_hosts TERM "${hosts[@]}"
	# in parallel: each is a few ip(8) calls and an umount (~70 ms a host)
	local -a jobs=()
	for h in "${hosts[@]}"; do
		host_release "$h" &
		jobs+=($!)
	done
	# only these: a failed `up` still has other children
	((${#jobs[@]} == 0)) || wait "${jobs[@]}"
	# anything else in the lab's cgroups (e.g. a host dir from another RUNDIR)
	for d in $(all_lab_cgroups); do cgroup_sweep "$d"; done
	ip link del "$BRIDGE" 2>/dev/null || true
	discard_dir "$RUNDIR"
	# nspawn's dirs on the machine, only if nothing else of nspawn's is there
	rmdir "$NSPAWN_RUN/propagate" "$NSPAWN_RUN/locks" "$NSPAWN_RUN" 2>/dev/null || true
	wait_reaped "${sups[@]}"
	if ((${#hosts[@]})) || [[ ${1:-} != quiet ]]; then
		log "down: ${#hosts[@]} host(s) torn down in $(fmt_ms $(($(now_ms) - t0)))"
	fi
}

# ---------------------------------------------------------------- run files
write_run_files() {
	local n=$1 i h addr half pub role region
	half=$(((n + 1) / 2))
	install -m 600 "$LAB_KEY" "$RUNDIR/id_ed25519"

	: >"$RUNDIR/known_hosts"
	for ((i = 1; i <= n; i++)); do
		h=$(host_name "$i")
		addr=$(host_addr "$i")
		for pub in "$IMAGE"/etc/ssh/ssh_host_*_key.pub; do
			awk -v names="$h,$addr" '{ print names, $1, $2 }' "$pub" >>"$RUNDIR/known_hosts"
		done
	done

	{
		echo "# drover test lab ($n hosts), written by tests/lab/lab.sh up"
		for ((i = 1; i <= n; i++)); do
			cat <<-EOF
				Host $(host_name "$i")
				  HostName $(host_addr "$i")
				  User root
				  IdentityFile $RUNDIR/id_ed25519
				  UserKnownHostsFile $RUNDIR/known_hosts
				  StrictHostKeyChecking yes
				  BatchMode yes
				  IdentitiesOnly yes
				  ConnectTimeout 5
			EOF
		done
		# defaults for every host (first match wins, so these come last)
		cat <<-EOF
			Host *
			  GlobalKnownHostsFile /dev/null
			  UpdateHostKeys no
			  CheckHostIP no
			  HashKnownHosts no
			  AddressFamily inet
			  LogLevel ERROR
			  ServerAliveInterval 5
			  ServerAliveCountMax 3
			  ForwardAgent no
			  ForwardX11 no
		EOF
	} >"$RUNDIR/ssh_config"

	{
		echo "defaults:"
		echo "  user: root"
		echo "  transport: ssh"
		echo "  ssh_config: $RUNDIR/ssh_config"
		echo "  connect_timeout: 5s"
		echo "hosts:"
		for ((i = 1; i <= n; i++)); do
			h=$(host_name "$i")
			role=worker
			((i % 2)) && role=web
			if ((i <= half)); then region=eu.west.$i; else region=us.east.$i; fi
			echo "  $h:"
			echo "    address: $h"
			echo "    labels: { role: $role, region: $region, lab: \"yes\" }"
			# The controller cannot resolve ssh_config aliases; gates
			# (wait.tcp/http) and health checks use this address.
			echo "    vars: { ip: $(host_addr "$i") }"
		done
	} >"$RUNDIR/inventory.yml"

	for ((i = 1; i <= n; i++)); do
		h=$(host_name "$i")
		echo "$h $(host_addr "$i") $RUNDIR/$h/dbus/system_bus_socket"
	done >"$RUNDIR/hosts"
}

# ---------------------------------------------------------------- commands
WAITERS=() # pollers of a running wait_hosts, stopped if `up` is interrupted
up_failed() {
	if ((${#WAITERS[@]})); then kill "${WAITERS[@]}" 2>/dev/null || true; fi
	if [[ ${DROVER_LAB_KEEP:-} == 1 ]]; then
		log "up failed; DROVER_LAB_KEEP=1 so the lab is left as is (lab.sh down removes it)"
	else
		log "up failed; tearing the lab down (DROVER_LAB_KEEP=1 keeps it for debugging)"
		teardown_all quiet
	fi
}

cmd_up() {
	local n=${1:-4} i h t0 deadline
	local -a hosts=()
	if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1 || n > MAX_HOSTS)); then
		die "up: N must be 1..$MAX_HOSTS"
	fi
	cmd_deps
	cmd_image_locked_or_current
	teardown_all quiet

	t0=$(now_ms)
	push_hook up_failed
	mkdir -p "$RUNDIR"
	chmod 755 "$RUNDIR"
	write_run_files "$n"
	bridge_up
	for ((i = 1; i <= n; i++)); do
		h=$(host_name "$i")
		hosts+=("$h")
		mkdir -p "$RUNDIR/$h"
		host_boot "$h"
	done
	deadline=$((EPOCHSECONDS + UP_TIMEOUT))
	wait_hosts "$deadline" "${hosts[@]}" || die "not every host came up"
	pop_hook
	log "up: $n host(s) in $(fmt_ms $(($(now_ms) - t0))) ($(sort "$RUNDIR"/lab-*/state | uniq -c | awk '{ printf "%s%s %s", sep, $1, $2; sep = ", " }'))"
	echo "$RUNDIR"
}

# `up` may rebuild the image only when no lab runs from it; after the
# teardown that comes next that is always true, so tear down first if stale.
cmd_image_locked_or_current() {
	ensure_key
	image_current && return 0
	teardown_all quiet
	cmd_image
}

require_host() {
	local h=$1
	[[ -f $RUNDIR/hosts ]] || die "no lab at $RUNDIR (run lab.sh up)"
	awk -v h="$h" '$1 == h { f = 1 } END { exit !f }' "$RUNDIR/hosts" || die "no host $h in $RUNDIR/hosts"
}

cmd_stop_host() {
	local h=${1:-} sig=TERM t0
	[[ -n $h ]] || die "usage: lab.sh stop-host HOST [--kill]"
	[[ ${2:-} == --kill ]] && sig=KILL
	require_host "$h"
	t0=$(now_ms)
	stop_hosts "$sig" "$h"
	host_release "$h"
	log "stop-host: $h is off ($(fmt_ms $(($(now_ms) - t0))))"
}

cmd_start_host() {
	local h=${1:-} t0
	[[ -n $h ]] || die "usage: lab.sh start-host HOST"
	require_host "$h"
	if [[ -n $(nspawn_pid "$h") ]] && wait_host "$h" $((EPOCHSECONDS + 5)); then
		log "start-host: $h is already up"
		return 0
	fi
	t0=$(now_ms)
	# clean up whatever half state is left (e.g. the host powered itself off)
	stop_hosts TERM "$h"
	host_release "$h"
	host_boot "$h"
	wait_hosts $((EPOCHSECONDS + UP_TIMEOUT)) "$h" || die "$h did not come back"
	log "start-host: $h is up ($(fmt_ms $(($(now_ms) - t0))))"
}

cmd_status() {
	local -a names addrs
	local name addr i tmp rc=0 st
	if [[ ! -f $RUNDIR/hosts ]]; then
		echo "lab is down (no $RUNDIR/hosts)"
		return 1
	fi
	while read -r name addr _; do
		names+=("$name")
		addrs+=("$addr")
	done <"$RUNDIR/hosts"
	tmp=$(mktemp -d)
	push_hook "rm -rf '$tmp'"
	for i in "${!names[@]}"; do
		if ssh -F "$RUNDIR/ssh_config" -o ConnectTimeout=3 "${names[i]}" true </dev/null 2>/dev/null; then
			echo ok >"$tmp/$i"
		else
			echo unreachable >"$tmp/$i"
		fi &
	done
	wait
	for i in "${!names[@]}"; do
		st=stopped
		[[ -n $(nspawn_pid "${names[i]}") ]] && st=running
		printf '%-8s %-12s nspawn=%-8s ssh=%s\n' "${names[i]}" "${addrs[i]}" "$st" "$(<"$tmp/$i")"
		[[ $(<"$tmp/$i") == ok ]] || rc=1
	done
	return "$rc"
}

usage() {
	sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
}

main() {
	local cmd=${1:-}
	[[ -n $cmd ]] || usage
	shift
	case $cmd in
	deps)
		need_root
		cmd_deps
		;;
	image)
		need_root
		check_paths
		take_lock
		cmd_image
		;;
	up)
		need_root
		check_paths
		take_lock
		cmd_up "$@"
		;;
	down)
		need_root
		check_paths
		take_lock
		teardown_all
		;;
	stop-host)
		need_root
		take_lock
		cmd_stop_host "$@"
		;;
	start-host)
		need_root
		take_lock
		cmd_start_host "$@"
		;;
	status) cmd_status ;;
	_supervise) cmd__supervise "$@" ;;
	-h | --help | help) usage ;;
	*) usage ;;
	esac
}

main "$@"
