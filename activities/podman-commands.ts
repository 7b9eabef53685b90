/**
 * podman and CRIU command lines, built by pure functions so every flag is unit-tested, and the parsers
 * for what those commands print. Nothing here runs a process.
 */
import { isIP } from 'node:net';

/** Applied to every container we create: runc (the runtime CRIU works with here) and ulimits root may set. */
export const containerDefaults = {
  runtime: 'runc',
  ulimits: ['nofile=1024:1024', 'nproc=1024:1024'],
} as const;

export interface PortMapping {
  hostPort: number;
  containerPort: number;
  /** Bind only this host address (default: all of the host's addresses). */
  hostIp?: string;
}

export interface VolumeMount {
  hostPath: string;
  containerPath: string;
  /** For example 'U' (chown to the container user) or 'ro'. */
  options?: string[];
}

export interface RunContainerSpec {
  name: string;
  image: string;
  memoryBytes?: number;
  cpus?: number;
  ports?: PortMapping[];
  env?: Record<string, string>;
  /**
   * Environment variables whose values are secrets (a token): never on the command line, where `ps` on the
   * host and a failed command's error message (which can end up in workflow history) would show them.
   * Only runContainerCommand takes them, passing the values on stdin.
   */
  secretEnv?: Record<string, string>;
  volumes?: VolumeMount[];
  labels?: Record<string, string>;
  user?: string;
  workdir?: string;
  network?: 'bridge' | 'host' | 'none';
  /** AppArmor blocks CRIU on Ubuntu hosts; harmless where AppArmor is off. */
  apparmorUnconfined?: boolean;
  /** Capabilities to drop ('all' for every one). */
  capDrop?: readonly string[];
  /** Forbid gaining privileges through setuid binaries. */
  noNewPrivileges?: boolean;
  /** Arguments after the image (the container's command). */
  command?: string[];
}

const containerNamePattern = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/;

function assertName(kind: string, value: string): void {
  if (!containerNamePattern.test(value)) throw new Error(`invalid ${kind} ${JSON.stringify(value)}: expected letters, digits, '_', '.', '-'`);
}

function assertPort(value: number): void {
  if (!Number.isInteger(value) || value < 1 || value > 65535) throw new Error(`invalid port ${value}`);
}

function publishArg(p: PortMapping): string {
  assertPort(p.hostPort);
  assertPort(p.containerPort);
  return p.hostIp ? `${p.hostIp}:${p.hostPort}:${p.containerPort}` : `${p.hostPort}:${p.containerPort}`;
}

function envArgs(env: Record<string, string> | undefined): string[] {
  return Object.entries(env ?? {}).flatMap(([k, v]) => {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`invalid environment variable name ${JSON.stringify(k)}`);
    return ['--env', `${k}=${v}`];
  });
}

/**
 * `podman run` of a spec that may carry secretEnv: a shell reads each secret's value from stdin, one line
 * each in the spec's order, exports it, and `podman run --env NAME` takes it from there.
 */
export function runContainerCommand(spec: RunContainerSpec): { argv: string[]; stdin?: string } {
  const secrets = Object.entries(spec.secretEnv ?? {});
  if (secrets.length === 0) return { argv: runContainerArgs(spec) };
  for (const [k, v] of secrets) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`invalid environment variable name ${JSON.stringify(k)}`);
    if (/[\r\n]/.test(v)) throw new Error(`the value of ${k} cannot hold a line break`);
  }
  const names = secrets.map(([k]) => k);
  const argv = runContainerArgs({ ...spec, secretEnv: undefined });
  const envAt = argv.indexOf('--name');
  argv.splice(envAt, 0, ...names.flatMap((k) => ['--env', k]));
  const script = `${names.map((k) => `IFS= read -r ${k} && export ${k}`).join(' && ')} && exec "$@"`;
  return { argv: ['sh', '-c', script, 'markco-run', ...argv], stdin: `${secrets.map(([, v]) => v).join('\n')}\n` };
}

export function runContainerArgs(spec: RunContainerSpec): string[] {
  assertName('container name', spec.name);
  if (spec.secretEnv && Object.keys(spec.secretEnv).length > 0) throw new Error('a spec with secretEnv runs through runContainerCommand (its values never go on a command line)');
  if (!spec.image) throw new Error('image is required');
  const args = ['podman', 'run', '--detach', '--name', spec.name, '--runtime', containerDefaults.runtime];
  for (const u of containerDefaults.ulimits) args.push('--ulimit', u);
  if (spec.memoryBytes !== undefined) {
    if (!Number.isInteger(spec.memoryBytes) || spec.memoryBytes < 6 * 1024 * 1024) throw new Error(`invalid memory limit ${spec.memoryBytes} bytes (podman needs at least 6 MiB)`);
    // Same value for memory+swap: a runtime never swaps, so the limit in force is the one we record.
    args.push('--memory', `${spec.memoryBytes}b`, '--memory-swap', `${spec.memoryBytes}b`);
  }
  if (spec.cpus !== undefined) {
    if (!(spec.cpus > 0)) throw new Error(`invalid CPU limit ${spec.cpus}`);
    args.push('--cpus', String(spec.cpus));
  }
  if (spec.network) args.push('--network', spec.network);
  for (const p of spec.ports ?? []) args.push('--publish', publishArg(p));
  args.push(...envArgs(spec.env));
  for (const v of spec.volumes ?? []) {
    if (!v.hostPath.startsWith('/') || !v.containerPath.startsWith('/')) throw new Error('volume paths must be absolute');
    args.push('--volume', `${v.hostPath}:${v.containerPath}${v.options?.length ? `:${v.options.join(',')}` : ''}`);
  }
  for (const [k, v] of Object.entries(spec.labels ?? {})) args.push('--label', `${k}=${v}`);
  if (spec.user) args.push('--user', spec.user);
  if (spec.workdir) args.push('--workdir', spec.workdir);
  if (spec.apparmorUnconfined) args.push('--security-opt', 'apparmor=unconfined');
  for (const cap of spec.capDrop ?? []) args.push('--cap-drop', cap);
  if (spec.noNewPrivileges) args.push('--security-opt', 'no-new-privileges');
  args.push(spec.image, ...(spec.command ?? []));
  return args;
}

export type CheckpointCompression = 'none' | 'zstd' | 'gzip';

export interface CheckpointSpec {
  container: string;
  exportPath: string;
  /** Keep the source running (migration before the switch, snapshots, sandbox forks). */
  leaveRunning: boolean;
  compress?: CheckpointCompression;
  /** Dump established TCP connections instead of refusing (CRIU refuses them by default). */
  tcpEstablished?: boolean;
  fileLocks?: boolean;
  /** Volumes are user files that live on the host; they move separately. */
  ignoreVolumes?: boolean;
}

/** Always with --print-stats: CRIU's own timings (frozen time is the downtime) are recorded on every checkpoint. */
export function checkpointArgs(spec: CheckpointSpec): string[] {
  assertName('container name', spec.container);
  if (!spec.exportPath.startsWith('/')) throw new Error('checkpoint export path must be absolute');
  const args = ['podman', 'container', 'checkpoint', '--print-stats', '--export', spec.exportPath, '--compress', spec.compress ?? 'none'];
  if (spec.leaveRunning) args.push('--leave-running');
  if (spec.tcpEstablished) args.push('--tcp-established');
  if (spec.fileLocks) args.push('--file-locks');
  if (spec.ignoreVolumes) args.push('--ignore-volumes');
  args.push(spec.container);
  return args;
}

export interface RestoreSpec {
  importPath: string;
  /**
   * The restored container's name: a new one for a fork beside its source, the same one for a migration.
   * Always give it: without --name podman asks for the checkpointed IP, fails where that IP is taken, and
   * its cleanup can tear down the source's network (verified, docs/design/elastic-compute.md section 1).
   */
  name?: string;
  ports?: PortMapping[];
  tcpEstablished?: boolean;
  fileLocks?: boolean;
  /** Another host's network: let podman give the container a fresh IP and MAC. */
  ignoreStaticIp?: boolean;
  ignoreStaticMac?: boolean;
}

export function restoreArgs(spec: RestoreSpec): string[] {
  if (spec.name !== undefined) assertName('container name', spec.name);
  if (!spec.importPath.startsWith('/')) throw new Error('checkpoint import path must be absolute');
  // A renamed copy would hold the same TCP connections as its source: podman refuses the pair.
  if (spec.name !== undefined && spec.tcpEstablished) throw new Error('a restore under a new name cannot keep established TCP connections (podman refuses --tcp-established with --name)');
  const args = ['podman', 'container', 'restore', '--print-stats', '--import', spec.importPath];
  if (spec.name !== undefined) args.push('--name', spec.name);
  for (const p of spec.ports ?? []) args.push('--publish', publishArg(p));
  if (spec.tcpEstablished) args.push('--tcp-established');
  if (spec.fileLocks) args.push('--file-locks');
  if (spec.ignoreStaticIp) args.push('--ignore-static-ip');
  if (spec.ignoreStaticMac) args.push('--ignore-static-mac');
  return args;
}

/**
 * How a checkpoint archive reaches `podman container restore --import` on the target:
 * - `stream`: through a FIFO while it arrives, so podman unpacks it as the bytes come in. podman 4.3
 *   opens the import path three times: twice for the container's definition (config.dump, spec.dump,
 *   the /dev/shm archive), then once to unpack everything else. The first two opens get the archive's
 *   head (those members, sent ahead by the worker); the third gets the whole stream. Each head is
 *   followed by zeros until podman closes its end, so the next open is a new one, never the same reader;
 *   and as soon as a reader has opened the FIFO, a fresh FIFO is renamed over the path, so podman's next
 *   open can never join a writer still filling the previous one (under load it did, and the unpacking
 *   read zeros: an empty archive).
 * - `file`: written to a file first, then restored (every other podman version, until verified).
 */
export type ImportMode = 'stream' | 'file';

/** podman versions whose import path sequence (see ImportMode) is verified here. */
export function streamedImportVerified(podmanVersion: string): boolean {
  return /^4\.3\./.test(podmanVersion.trim());
}

export const receivedHashMarker = 'markco-received-sha256';

/**
 * Receives a checkpoint archive on stdin and restores it (`restore` names `<dir>/in.tar` as its import
 * path). With `stream`, stdin starts with `headBytes` bytes of the archive's head as a tar of its own,
 * then the whole archive. The target hashes every byte of the archive it received (openssl, or
 * sha256sum) and prints `markco-received-sha256 <hex>` before podman's own output; podman's errors go
 * to stderr. A restore that fails stops the feeding at once.
 */
export function receiveAndRestoreArgs(spec: { dir: string; mode: ImportMode; headBytes: number; restore: RestoreSpec; /** Read the archive from this file on the host instead of stdin (a stored snapshot). */ fromFile?: string }): string[] {
  if (spec.fromFile !== undefined && !spec.fromFile.startsWith('/')) throw new Error('the archive file must be an absolute path');
  if (!spec.dir.startsWith('/')) throw new Error('receive directory must be absolute');
  if (spec.restore.importPath !== `${spec.dir}/in.tar`) throw new Error('the restore must import <dir>/in.tar');
  if (spec.mode === 'stream' && !(Number.isInteger(spec.headBytes) && spec.headBytes >= 0)) throw new Error('a streamed import needs the head\'s size, or 0 for a head written to <dir>/head.tar');
  const script = `set -u
dir=$1; mode=$2; headBytes=$3; from=$4; shift 4
in=$dir/in.tar; hashpipe=$dir/hash.fifo
umask 077
mkdir -p "$dir" && rm -f "$in" "$in.next" "$hashpipe" "$dir/hash" && mkfifo "$hashpipe" || exit 70
if [ "$from" = - ]; then exec 3<&0; else [ -r "$from" ] || { echo "no archive at $from" >&2; exit 71; }; exec 3<"$from"; fi
{ openssl dgst -sha256 -r 2>/dev/null || sha256sum; } < "$hashpipe" > "$dir/hash" &
hasher=$!
feeder=
if [ "$mode" = stream ]; then
  if [ "$headBytes" = 0 ]; then
    # The head comes as a file of its own (a piped transfer: stdin is the archive alone), renamed into place.
    until [ -s "$dir/head.tar" ]; do sleep 0.05; done
    mkfifo "$in" || exit 70
  else
    mkfifo "$in" && dd of="$dir/head.tar" bs="$headBytes" count=1 iflag=fullblock status=none <&3 || exit 70
  fi
  (
    for open in 1 2; do
      exec 4>"$in"
      mkfifo "$in.next" && mv -f "$in.next" "$in" || exit 70
      { cat "$dir/head.tar"; head -c 67108864 /dev/zero; } >&4 2>/dev/null
      exec 4>&-
    done
    exec tee -p "$hashpipe" <&3 > "$in"
  ) &
  feeder=$!
else
  tee "$hashpipe" <&3 > "$in" || exit 71
fi
"$@" > "$dir/restore.out" 2> "$dir/restore.err"; rc=$?
if [ -n "$feeder" ]; then
  if [ "$rc" = 0 ]; then wait "$feeder"; else
    kill -STOP "$feeder" 2>/dev/null; pkill -KILL -P "$feeder"; kill -KILL "$feeder" 2>/dev/null
  fi
fi
[ "$rc" = 0 ] && wait "$hasher" || kill "$hasher" 2>/dev/null
printf '${receivedHashMarker} %s\n' "$(cut -d' ' -f1 "$dir/hash" 2>/dev/null)"
cat "$dir/restore.out"; cat "$dir/restore.err" >&2
exit $rc`;
  return ['sh', '-c', script, 'markco-receive-restore', spec.dir, spec.mode, String(spec.mode === 'stream' ? spec.headBytes : 0), spec.fromFile ?? '-', ...restoreArgs(spec.restore)];
}

export const sentMarker = 'markco-sent';

/**
 * The source's end of a piped transfer (bytes source -> target through OS pipes, never through the
 * worker): reads the export FIFO as readExportFreezingArgs does (the runtime frozen at the first block)
 * and writes the archive to stdout, hashing it on the way. The first `headMax` bytes are also kept as
 * `<dir>/head.raw`, in place before any byte goes out (the target waits for the head before it reads its
 * stdin, so a head kept only after sending would deadlock), for the worker to take the archive's head from, and
 * `<dir>/hasher.pid` names the hashing process, whose read count is the transfer's progress. Ends with
 * `markco-sent <bytes> <sha256>` on stderr; exit 70 when reading or hashing failed.
 */
export function readExportPipedArgs(spec: { fifo: string; freezer: CgroupFreezer; dir: string; headMax: number }): string[] {
  if (!spec.fifo.startsWith('/') || !spec.dir.startsWith('/')) throw new Error('the export FIFO and the reader directory must be absolute');
  if (!(Number.isInteger(spec.headMax) && spec.headMax > 512)) throw new Error('headMax must be a whole number of bytes above 512');
  const script = `set -u
fifo=$1; file=$2; frozen=$3; dir=$4; headMax=$5; first=$fifo.first
hashpipe=$dir/sent.fifo
rm -f "$hashpipe" "$dir/head.raw" "$dir/sent.sha256" "$dir/read.rc" "$dir/read.err" && mkfifo "$hashpipe" || exit 70
{ openssl dgst -sha256 -r 2>/dev/null || sha256sum; } < "$hashpipe" > "$dir/sent.sha256" &
hasher=$!
printf %s "$hasher" > "$dir/hasher.pid"
{ dd of="$first" bs=512 count=1 iflag=fullblock status=none &&
  { [ ! -s "$first" ] || printf %s "$frozen" > "$file"; } &&
  dd bs=$((headMax - 512)) count=1 iflag=fullblock status=none >> "$first" &&
  mv -f "$first" "$dir/head.raw" && cat "$dir/head.raw" &&
  dd bs=1M 2> "$dir/read.err"; printf %s "$?" > "$dir/read.rc"; } < "$fifo" | tee -p "$hashpipe"
wait "$hasher" || exit 70
[ "$(cat "$dir/read.rc" 2>/dev/null)" = 0 ] || { cat "$dir/read.err" >&2 2>/dev/null; exit 70; }
rest=$(awk '$2 == "bytes" { print $1; exit }' "$dir/read.err")
printf '${sentMarker} %s %s\n' "$(( $(wc -c < "$dir/head.raw") + \${rest:-0} ))" "$(cut -d' ' -f1 "$dir/sent.sha256")" >&2`;
  return ['sh', '-c', script, 'markco-export-pipe', spec.fifo, spec.freezer.file, spec.freezer.frozen, spec.dir, String(spec.headMax)];
}

/** The byte count and sha256 a piped reader (readExportPipedArgs) reports on stderr. */
export function parseSentReport(stderr: string): { bytes: number; sha256: string } {
  const m = new RegExp(`(?:^|\\n)${sentMarker} (\\d+) ([0-9a-f]{64})\\n`).exec(stderr);
  if (!m) throw new Error(`the source reported no byte count and hash: ${stderr.slice(-300)}`);
  return { bytes: Number(m[1]), sha256: m[2]! };
}

/** Reads a piped reader's progress: how many bytes its hashing process has read so far. */
export function sentProgressArgs(dir: string): string[] {
  return ['sh', '-c', 'pid=$(cat "$1/hasher.pid" 2>/dev/null) && sed -n "s/^rchar: //p" "/proc/$pid/io" 2>/dev/null || true', 'markco-progress', dir];
}

/** The target's hash of what it received, and podman's own output after it. */
export function parseReceiveOutput(stdout: string): { sha256: string; restoreOutput: string } {
  const m = new RegExp(`^${receivedHashMarker} ([0-9a-f]{64})?\\n`).exec(stdout);
  if (!m) throw new Error(`unexpected receive output: ${stdout.slice(0, 200)}`);
  return { sha256: m[1] ?? '', restoreOutput: stdout.slice(m[0].length) };
}

/** Removes a container; a container that is already gone is not an error (idempotent retries). */
export function removeContainerArgs(name: string): string[] {
  assertName('container name', name);
  return ['podman', 'rm', '--force', '--ignore', '--time', '0', name];
}

/** Every container's name on the host, running or not, one a line. */
export const containerNamesArgs = ['podman', 'ps', '--all', '--format', '{{.Names}}'];

export function pauseArgs(name: string): string[] {
  assertName('container name', name);
  return ['podman', 'pause', name];
}

export function unpauseArgs(name: string): string[] {
  assertName('container name', name);
  return ['podman', 'unpause', name];
}

/**
 * Raises (or lowers) the cgroup limits of a running container, e.g. after a restore on a bigger tier.
 * podman 4.3 applies the change but keeps reporting the old memory limit in inspect and stats: read the
 * limit in force with cgroupMemoryLimitArgs.
 */
export function updateMemoryArgs(name: string, memoryBytes: number, cpus?: number): string[] {
  assertName('container name', name);
  if (!Number.isInteger(memoryBytes) || memoryBytes <= 0) throw new Error(`invalid memory limit ${memoryBytes}`);
  if (cpus !== undefined && !(cpus > 0)) throw new Error(`invalid CPU limit ${cpus}`);
  return ['podman', 'update', '--memory', `${memoryBytes}b`, '--memory-swap', `${memoryBytes}b`, ...(cpus === undefined ? [] : ['--cpus', String(cpus)]), name];
}

/**
 * Prints `v1 <limit>` or `v2 <limit>`: the memory limit the kernel enforces on the container, read from
 * its cgroup through /proc/<pid>/cgroup (cgroup v1 `memory.limit_in_bytes`, v2 `memory.max`).
 */
export function cgroupMemoryLimitArgs(name: string): string[] {
  assertName('container name', name);
  const script = `set -eu
pid=$(podman container inspect --format '{{.State.Pid}}' "$1")
line=$(awk -F: '$2=="memory"{m=$3} $1=="0"&&$2==""{u=$3} END{if(m!="")print "v1 "m; else print "v2 "u}' "/proc/$pid/cgroup")
path=\${line#* }
case "$line" in
  v1*) printf 'v1 '; cat "/sys/fs/cgroup/memory$path/memory.limit_in_bytes" ;;
  *) printf 'v2 '; cat "/sys/fs/cgroup$path/memory.max" ;;
esac`;
  return ['sh', '-c', script, 'markco-cgroup-limit', name];
}

/** The enforced limit in bytes, or null when the cgroup has none (`max`). */
export function parseCgroupMemoryLimit(stdout: string): number | null {
  const m = /^(v1|v2) (\S+)\s*$/.exec(stdout.trim());
  if (!m) throw new Error(`unexpected cgroup limit output: ${stdout.slice(0, 200)}`);
  if (m[2] === 'max') return null;
  const n = Number(m[2]);
  if (!Number.isFinite(n)) throw new Error(`unexpected cgroup limit ${m[2]}`);
  // cgroup v1 reports "no limit" as a page-rounded LONG_MAX.
  return n >= 2 ** 62 ? null : n;
}

/**
 * Prints `<file> <frozen> <thawed>`: the container's freezer control and its two values (cgroup v1
 * `freezer.state` FROZEN/THAWED, v2 `cgroup.freeze` 1/0), found through /proc/<pid>/cgroup.
 */
export function cgroupFreezerArgs(name: string): string[] {
  assertName('container name', name);
  const script = `set -eu
pid=$(podman container inspect --format '{{.State.Pid}}' "$1")
awk -F: '$2=="freezer"{v1=$3} $1=="0"&&$2==""{v2=$3} END{if(v1!="")print "/sys/fs/cgroup/freezer" v1 "/freezer.state FROZEN THAWED"; else print "/sys/fs/cgroup" v2 "/cgroup.freeze 1 0"}' "/proc/$pid/cgroup"`;
  return ['sh', '-c', script, 'markco-cgroup-freezer', name];
}

export interface CgroupFreezer {
  file: string;
  frozen: string;
  thawed: string;
}

export function parseCgroupFreezer(stdout: string): CgroupFreezer {
  const m = /^(\/sys\/fs\/cgroup\/\S+) (FROZEN|1) (THAWED|0)\s*$/.exec(stdout.trim());
  if (!m || m[1]!.includes('..')) throw new Error(`unexpected cgroup freezer output: ${stdout.slice(0, 200)}`);
  return { file: m[1]!, frozen: m[2]!, thawed: m[3]! };
}

/**
 * Reads a checkpoint export FIFO to stdout, and freezes the container's cgroup as soon as the first
 * block arrives: podman writes the archive only after CRIU's dump, and with --leave-running the process
 * runs again by then, so whatever it did during the export would be missing on the target. Nothing is
 * frozen when the dump fails before writing.
 */
export function readExportFreezingArgs(fifo: string, freezer: CgroupFreezer): string[] {
  if (!fifo.startsWith('/')) throw new Error('the export FIFO path must be absolute');
  const script = `fifo=$1; file=$2; frozen=$3; first=$fifo.first
{ dd of="$first" bs=512 count=1 iflag=fullblock status=none || exit 70
  [ -s "$first" ] && printf %s "$frozen" > "$file"
  cat "$first" && rm -f "$first" && exec cat; } < "$fifo"`;
  return ['sh', '-c', script, 'markco-export-reader', fifo, freezer.file, freezer.frozen];
}

/**
 * Checkpoints a running (or paused: podman refuses to dump those, so it is resumed first) container and
 * pauses it right after the dump: with --leave-running, anything the source answered after the dump would
 * silently be missing on the target. A container that was paused is paused again even when the dump
 * failed. The pause's own output goes to stderr so stdout stays the checkpoint's statistics. With a
 * freezer (see readExportFreezingArgs), the reader froze the container as the export began and it stays
 * frozen behind podman's back, which still calls it running (frozenContainerArgs ends that state).
 */
export function checkpointThenPauseArgs(spec: CheckpointSpec & { wasPaused: boolean; freezer?: CgroupFreezer }): string[] {
  const checkpoint = checkpointArgs({ ...spec, leaveRunning: true });
  const script = `wasPaused=$1; name=$2; file=$3; frozenValue=$4; thawed=$5; shift 5
if [ "$wasPaused" = 1 ]; then podman unpause "$name" >&2 || exit $?; fi
"$@"; rc=$?
frozen=; [ -n "$file" ] && [ "$(cat "$file" 2>/dev/null)" = "$frozenValue" ] && frozen=1
# The reader froze it: keep it frozen (runc would refuse to pause it, and a thaw, even a short one, would
# let it answer requests queued meanwhile), unless the dump failed.
if [ -n "$frozen" ] && [ "$rc" != 0 ]; then printf %s "$thawed" > "$file"; frozen=; fi
if [ -z "$frozen" ] && { [ "$rc" = 0 ] || [ "$wasPaused" = 1 ]; }; then podman pause "$name" >&2 || [ "$rc" != 0 ] || rc=$?; fi
exit $rc`;
  return ['sh', '-c', script, 'markco-checkpoint', spec.wasPaused ? '1' : '0', spec.container, spec.freezer?.file ?? '', spec.freezer?.frozen ?? '', spec.freezer?.thawed ?? '', ...checkpoint];
}

/**
 * For a container podman believes running whose cgroup is frozen (an export reader froze it): `thaw`
 * lets it run again (the migration failed, or a retry dumps again); `kill` ends it without letting it
 * run at all (the migration committed: a request it had queued must not be answered by a copy that is
 * no longer the runtime), SIGKILL first, then thaw, so the kill is the first thing the tasks see.
 * No-op for any other container.
 */
export function frozenContainerArgs(name: string, action: 'thaw' | 'kill'): string[] {
  assertName('container name', name);
  const script = `status=$(podman container inspect --format '{{.State.Status}}' "$1" 2>/dev/null) || exit 0
[ "$status" = running ] || exit 0
pid=$(podman container inspect --format '{{.State.Pid}}' "$1") || exit 0
awk -F: '$2=="freezer"{print "/sys/fs/cgroup/freezer" $3 " freezer.state THAWED"} $1=="0"&&$2==""{print "/sys/fs/cgroup" $3 " cgroup.freeze 0"}' "/proc/$pid/cgroup" |
while read -r dir control thawed; do
  state=$(cat "$dir/$control" 2>/dev/null) || continue
  case "$state" in FROZEN|FREEZING|1) ;; *) continue ;; esac
  [ "$2" = kill ] && for p in $(cat "$dir/cgroup.procs"); do kill -KILL "$p" 2>/dev/null; done
  printf %s "$thawed" > "$dir/$control"
done
exit 0`;
  return ['sh', '-c', script, 'markco-frozen', name, action];
}

export function inspectContainerArgs(name: string): string[] {
  assertName('container name', name);
  return ['podman', 'container', 'inspect', name];
}

/** Prints the container's state (running, exited, created, paused ...); exit 125 when there is no such container. */
export function containerStatusArgs(name: string): string[] {
  assertName('container name', name);
  return ['podman', 'container', 'inspect', '--format', '{{.State.Status}}', name];
}

export function startContainerArgs(name: string): string[] {
  assertName('container name', name);
  return ['podman', 'start', name];
}

/** Raw numbers (bytes, CPU percent, pids), not the rounded text podman's JSON format prints. */
export function rawStatsArgs(name: string): string[] {
  assertName('container name', name);
  return ['podman', 'stats', '--no-stream', '--no-reset', '--format', '{{.ContainerStats.MemUsage}} {{.ContainerStats.MemLimit}} {{.ContainerStats.CPU}} {{.ContainerStats.PIDs}}', name];
}

export interface RawStats {
  memoryUsedBytes: number;
  memoryLimitBytes: number;
  cpuPercent: number;
  pids: number;
}

export function parseRawStats(stdout: string): RawStats {
  const [used, limit, cpu, pids] = stdout.trim().split(/\s+/).map(Number);
  if ([used, limit, cpu, pids].some((n) => n === undefined || !Number.isFinite(n))) throw new Error(`unexpected podman stats output: ${stdout.slice(0, 200)}`);
  return { memoryUsedBytes: used!, memoryLimitBytes: limit!, cpuPercent: Math.round(cpu! * 100) / 100, pids: pids! };
}

export function containerExistsArgs(name: string): string[] {
  assertName('container name', name);
  return ['podman', 'container', 'exists', name];
}

export function imageExistsArgs(image: string): string[] {
  return ['podman', 'image', 'exists', image];
}

export function statsArgs(names: string[]): string[] {
  names.forEach((n) => assertName('container name', n));
  return ['podman', 'stats', '--no-stream', '--format', 'json', ...names];
}

export const podmanVersionArgs = ['podman', 'version', '--format', 'json'];
export const podmanRuntimeArgs = ['podman', 'info', '--format', '{{.Host.OCIRuntime.Name}} {{.Host.CgroupsVersion}}'];
export const criuVersionArgs = ['criu', '--version'];

/** CRIU timings from `podman container checkpoint --print-stats`, in milliseconds. */
export interface CheckpointStats {
  podmanMs: number;
  runtimeMs: number;
  freezingMs: number;
  /** How long the process stood still: the downtime a user sees. */
  frozenMs: number;
  memdumpMs: number;
  memwriteMs: number;
  pagesScanned: number;
  pagesWritten: number;
}

export interface RestoreStats {
  podmanMs: number;
  runtimeMs: number;
  restoreMs: number;
  forkingMs: number;
  pagesRestored: number;
}

const us = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? Math.round(v / 100) / 10 : 0);
const count = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);

function firstJsonObject(stdout: string): Record<string, unknown> {
  const start = stdout.indexOf('{');
  const end = stdout.lastIndexOf('}');
  if (start < 0 || end < start) throw new Error(`no statistics in podman output: ${stdout.slice(0, 200)}`);
  return JSON.parse(stdout.slice(start, end + 1)) as Record<string, unknown>;
}

function containerStats(doc: Record<string, unknown>): Record<string, unknown> {
  const list = doc.container_statistics;
  return (Array.isArray(list) && typeof list[0] === 'object' && list[0] !== null ? list[0] : {}) as Record<string, unknown>;
}

export function parseCheckpointStats(stdout: string): CheckpointStats {
  const doc = firstJsonObject(stdout);
  const c = containerStats(doc);
  const criu = (c.criu_statistics ?? {}) as Record<string, unknown>;
  return {
    podmanMs: us(doc.podman_checkpoint_duration),
    runtimeMs: us(c.runtime_checkpoint_duration),
    freezingMs: us(criu.freezing_time),
    frozenMs: us(criu.frozen_time),
    memdumpMs: us(criu.memdump_time),
    memwriteMs: us(criu.memwrite_time),
    pagesScanned: count(criu.pages_scanned),
    pagesWritten: count(criu.pages_written),
  };
}

export function parseRestoreStats(stdout: string): RestoreStats {
  const doc = firstJsonObject(stdout);
  const c = containerStats(doc);
  const criu = (c.criu_statistics ?? {}) as Record<string, unknown>;
  return {
    podmanMs: us(doc.podman_restore_duration),
    runtimeMs: us(c.runtime_restore_duration),
    restoreMs: us(criu.restore_time),
    forkingMs: us(criu.forking_time),
    pagesRestored: count(criu.pages_restored),
  };
}

/** "Version: 4.2.1" (first line of `criu --version`) -> "4.2.1". */
export function parseCriuVersion(stdout: string): string {
  const m = /^Version:\s*([0-9]+(?:\.[0-9]+)*)/m.exec(stdout);
  if (!m?.[1]) throw new Error(`unrecognised criu --version output: ${stdout.slice(0, 200)}`);
  return m[1];
}

export function parsePodmanVersion(stdout: string): string {
  const doc = JSON.parse(stdout) as { Client?: { Version?: string }; Version?: string };
  const v = doc.Client?.Version ?? doc.Version;
  if (!v) throw new Error(`unrecognised podman version output: ${stdout.slice(0, 200)}`);
  return v;
}

/** Numeric comparison of dotted versions: compareVersions('4.10', '4.2') > 0. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map((n) => Number.parseInt(n, 10) || 0);
  const pb = b.split('.').map((n) => Number.parseInt(n, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** Where a host's podman keeps containers (`graphroot`) and their runtime state (`runroot`). */
export const storageRootsArgs = ['podman', 'info', '--format', '{{.Store.GraphRoot}} {{.Store.RunRoot}}'];

export function parseStorageRoots(stdout: string): { graphRoot: string; runRoot: string } {
  const [graphRoot, runRoot] = stdout.trim().split(/\s+/);
  if (!graphRoot?.startsWith('/') || !runRoot?.startsWith('/')) throw new Error(`unexpected podman storage roots: ${stdout.slice(0, 200)}`);
  return { graphRoot, runRoot };
}

/**
 * A checkpoint's config.dump and spec.dump hold paths under the source's storage roots, and podman 4.3
 * restores them as they are (only the container id is swapped in). Identical roots (every production host
 * uses podman's defaults) need nothing; otherwise the paths are moved to the target's roots.
 */
export function relocateStoragePaths(text: string, from: { graphRoot: string; runRoot: string }, to: { graphRoot: string; runRoot: string }): string {
  let out = text;
  for (const [a, b] of [
    [from.graphRoot, to.graphRoot],
    [from.runRoot, to.runRoot],
  ] as const) {
    if (a === b) continue;
    out = out.split(`"${a}/`).join(`"${b}/`).split(`"${a}"`).join(`"${b}"`);
  }
  return out;
}

/**
 * Sets the memory limit (and swap, equal: no swap) in a checkpoint's OCI spec, in config.dump's `spec` and
 * in spec.dump alike. `podman update` after a restore changes the cgroup but not the spec that the next
 * checkpoint carries, so without this a runtime that grew on a big tier is restored under its creation
 * limit and the kernel kills CRIU. Only the `"memory":{…}` objects are touched (no JSON round trip, so
 * nothing else in podman's dump changes).
 */
export function setCheckpointMemoryLimit(text: string, memoryBytes: number): string {
  if (!Number.isInteger(memoryBytes) || memoryBytes <= 0) throw new Error(`invalid memory limit ${memoryBytes}`);
  const withValue = (obj: string, key: string) =>
    new RegExp(`"${key}"\\s*:\\s*-?\\d+`).test(obj) ? obj.replace(new RegExp(`"${key}"\\s*:\\s*-?\\d+`), `"${key}":${memoryBytes}`) : obj.replace(/^\{/, `{"${key}":${memoryBytes}${obj === '{}' ? '' : ','}`);
  let found = false;
  const out = text.replace(/"memory"\s*:\s*(\{[^{}]*\})/g, (_m, obj: string) => {
    found = true;
    return `"memory":${withValue(withValue(obj, 'limit'), 'swap')}`;
  });
  if (found) return out;
  // No memory object yet (a container made without a limit): add one to the resources.
  return text.replace(/"resources"\s*:\s*\{/g, `"resources":{"memory":{"limit":${memoryBytes},"swap":${memoryBytes}},`);
}

/**
 * A sandbox's own network and the host firewall rules that keep it away from the user's runtime: one
 * isolated podman network per sandbox (sandboxes never see each other), no packet from its subnet to
 * the runtimes' network (directly or through a port the host publishes, which DNAT turns into the same)
 * and no new connection to the host itself (the editor listens there; replies to the host's own
 * connections, such as the worker's and the edge's to the sandbox, pass). Prints the sandbox network's subnet.
 * Arguments: the network's name, the rule comment.
 */
export function sandboxNetworkArgs(network: string, comment: string): string[] {
  assertName('network name', network);
  const script = `set -eu
net=$1; tag=$2
podman network exists "$net" || podman network create --opt isolate=true "$net" >/dev/null
sub=$(podman network inspect "$net" --format '{{range .Subnets}}{{.Subnet}} {{end}}' | cut -d' ' -f1)
runtimes=$(podman network inspect podman --format '{{range .Subnets}}{{.Subnet}} {{end}}' | cut -d' ' -f1)
[ -n "$sub" ] && [ -n "$runtimes" ] || { echo "no subnet for $net or podman" >&2; exit 1; }
iptables -C FORWARD -s "$sub" -d "$runtimes" -m comment --comment "$tag" -j DROP 2>/dev/null || iptables -I FORWARD 1 -s "$sub" -d "$runtimes" -m comment --comment "$tag" -j DROP
iptables -C INPUT -s "$sub" -m conntrack --ctstate NEW -m comment --comment "$tag" -j DROP 2>/dev/null || iptables -I INPUT 1 -s "$sub" -m conntrack --ctstate NEW -m comment --comment "$tag" -j DROP
echo "$sub"`;
  return ['sh', '-c', script, 'markco-sandbox-net', network, comment];
}

/** The comment on the data-service forward of a runtime host (dataForwardArgs). */
export const dataForwardComment = 'markco-data-forward';

/**
 * On a runtime host other than the base server: its runtime containers' connections to the data
 * service's port at their gateway (host.containers.internal, the name in MARKCO_DATA_URL) are forwarded
 * to the control plane's address, where the data service listens (MARKCO_FLIGHT_HOSTS_HOST); podman's own
 * masquerading carries the answers back. A forward to another address or port is replaced. Safe to repeat.
 * Arguments: the address, the port.
 */
export function dataForwardArgs(to: string, port: number): string[] {
  if (isIP(to) !== 4) throw new Error(`invalid data service address ${JSON.stringify(to)}: expected an IPv4 address`);
  assertPort(port);
  const script = `set -eu
to=$1; port=$2; tag=${dataForwardComment}
gw=$(podman network inspect podman --format '{{range .Subnets}}{{.Gateway}} {{end}}' | cut -d' ' -f1)
sub=$(podman network inspect podman --format '{{range .Subnets}}{{.Subnet}} {{end}}' | cut -d' ' -f1)
[ -n "$gw" ] && [ -n "$sub" ] || { echo "podman's network has no subnet or gateway" >&2; exit 1; }
sysctl -qw net.ipv4.ip_forward=1
iptables -t nat -S PREROUTING | grep -F -- "--comment $tag " | grep -vF -- "-d $gw/32 -p tcp -m tcp --dport $port -m comment --comment $tag -j DNAT --to-destination $to:$port" \\
  | sed "s/^-A /-D /" | while read -r rule; do eval "iptables -t nat $rule"; done
iptables -t nat -C PREROUTING -s "$sub" -d "$gw" -p tcp --dport "$port" -m comment --comment "$tag" -j DNAT --to-destination "$to:$port" 2>/dev/null \\
  || iptables -t nat -I PREROUTING 1 -s "$sub" -d "$gw" -p tcp --dport "$port" -m comment --comment "$tag" -j DNAT --to-destination "$to:$port"
`;
  return ['sh', '-c', script, 'markco-data-forward', to, String(port)];
}

/** Removes what sandboxNetworkArgs made (its rules by their comment, then the network). Safe to repeat. */
export function removeSandboxNetworkArgs(network: string, comment: string): string[] {
  assertName('network name', network);
  const script = `net=$1; tag=$2
for chain in FORWARD INPUT; do
  iptables -S "$chain" | grep -F -- "--comment $tag " | sed "s/^-A /-D /" | while read -r rule; do eval "iptables $rule" || true; done
done
podman network exists "$net" && podman network rm --force "$net" >/dev/null
exit 0`;
  return ['sh', '-c', script, 'markco-sandbox-net-rm', network, comment];
}

/**
 * Points a checkpoint's container config (config.dump) at another image, when it names one of the
 * `swappable` images (the CPU and GPU runtime images, which share every lower layer, so CRIU finds each
 * mapped file unchanged): a runtime hopping onto a GPU host restores on the GPU image, and back. Any other
 * image is left alone (a runtime made from an older image keeps it).
 */
export function setCheckpointImage(configDump: string, image: { name: string; id: string }, swappable: readonly string[]): string {
  if (!/^[0-9a-f]{64}$/.test(image.id)) throw new Error(`invalid image id ${JSON.stringify(image.id)}`);
  const config = JSON.parse(configDump) as Record<string, unknown>;
  const current = config.rootfsImageName;
  if (typeof current !== 'string' || current === image.name || !swappable.includes(current)) return configDump;
  config.rootfsImageName = image.name;
  config.RawImageName = image.name;
  config.rootfsImageID = image.id;
  return JSON.stringify(config);
}

/** Points a checkpoint's container config (config.dump) at another network: a restored fork joins its own. */
export function setCheckpointNetwork(configDump: string, network: string): string {
  const config = JSON.parse(configDump) as Record<string, unknown>;
  config.newNetworks = { [network]: { interface_name: 'eth0' } };
  return JSON.stringify(config);
}

/**
 * The resource monitor's sampler: one long-running shell per host that prints, every `intervalMs`, one
 * `s <container> <memory.current> <memory.max> <cpu usage_usec>` line per running runtime container,
 * then `t <epoch ms>`. Only shell builtins run per sample (the cgroup files are read with `read`); the
 * container list and their cgroup paths are refreshed every `relistEvery` samples with one `podman ps`.
 * cgroup v2, and v1 (this machine is a hybrid host: memory and cpuacct controllers on v1).
 */
export function hostSamplerArgs(intervalMs: number, relistEvery: number): string[] {
  if (!Number.isInteger(intervalMs) || intervalMs < 100) throw new Error('the sampling interval must be at least 100 ms');
  if (!Number.isInteger(relistEvery) || relistEvery < 1) throw new Error('relistEvery must be a positive whole number');
  // Per container: "v2 <name> <dir>" on cgroup v2, "v1 <name> <memory dir> <cpuacct dir>" on v1 (hybrid hosts).
  const script = `interval=$1; relist=$2; n=0; paths=
while :; do
  if [ $((n % relist)) = 0 ]; then
    paths=$(podman ps --filter label=ai.markco.role=runtime --format '{{.Names}} {{.Pid}}' 2>/dev/null | while read -r name pid; do
      [ -n "$pid" ] && [ "$pid" != 0 ] || continue
      mem=; cpu=; uni=
      while IFS=: read -r id ctl path; do
        case "$ctl" in memory) mem=$path ;; cpuacct|cpu,cpuacct|cpuacct,cpu) cpu=$path ;; esac
        [ "$id" = 0 ] && uni=$path
      done < "/proc/$pid/cgroup" 2>/dev/null
      if [ -n "$mem" ]; then echo "v1 $name /sys/fs/cgroup/memory$mem /sys/fs/cgroup/cpuacct$cpu"; elif [ -n "$uni" ]; then echo "v2 $name /sys/fs/cgroup$uni"; fi
    done)
  fi
  n=$((n + 1))
  echo "$paths" | while read -r v name dir cpudir; do
    cur=; max=; usage=
    case "$v" in
      v2)
        read -r cur < "$dir/memory.current" 2>/dev/null || continue
        read -r max < "$dir/memory.max" 2>/dev/null
        while read -r key value; do [ "$key" = usage_usec ] && { usage=$value; break; }; done < "$dir/cpu.stat" ;;
      v1)
        read -r cur < "$dir/memory.usage_in_bytes" 2>/dev/null || continue
        read -r max < "$dir/memory.limit_in_bytes" 2>/dev/null
        [ \${#max} -ge 19 ] && max=max
        read -r ns < "$cpudir/cpuacct.usage" 2>/dev/null && usage=$((ns / 1000)) ;;
      *) continue ;;
    esac
    echo "s $name $cur $max $usage"
  done
  echo "t $(date +%s%3N)"
  sleep "$interval"
done`;
  return ['sh', '-c', script, 'markco-sampler', (intervalMs / 1000).toFixed(3), String(relistEvery)];
}

export interface ContainerSample {
  name: string;
  memoryBytes: number;
  /** The cgroup's limit in force (`max`: none). */
  limitBytes: number | null;
  cpuUsageUsec: number;
}

/** One sampler line: a container's figures, the end of a sample (`t`), or null for anything else. */
export function parseSamplerLine(line: string): { kind: 'sample'; sample: ContainerSample } | { kind: 'tick'; at: number } | null {
  const parts = line.trim().split(' ');
  if (parts[0] === 't' && parts.length === 2 && /^\d+$/.test(parts[1]!)) return { kind: 'tick', at: Number(parts[1]) };
  if (parts[0] !== 's' || parts.length !== 5) return null;
  const [, name, cur, max, usage] = parts as [string, string, string, string, string];
  if (!/^\d+$/.test(cur) || !/^\d+$/.test(usage) || !(max === 'max' || /^\d+$/.test(max))) return null;
  return { kind: 'sample', sample: { name, memoryBytes: Number(cur), limitBytes: max === 'max' ? null : Number(max), cpuUsageUsec: Number(usage) } };
}
