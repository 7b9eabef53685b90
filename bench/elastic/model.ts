/**
 * What the elastic cost simulation models instead of running: how long each operation takes, from the
 * measurements in docs/benchmarks.md (this repository's own benches, on a 2-vCPU VM), and how long an EC2
 * instance takes from RunInstances to a host ready for work (assumed; neither the emulator nor the
 * simulated cloud boots like EC2: moto reports `running` at once and a namespace host is up in about a second).
 * Every figure is linear in the runtime's memory: a fixed part plus seconds per GiB.
 */
import { GiB } from './trace.js';

export interface Durations {
  /** A first login: runtime and editor created on the base server. */
  loginMs: number;
  /** A login while the runtime runs (nothing to do but answer). */
  loginRunningMs: number;
  migrateMs(bytes: number, fromEc2: boolean, toEc2: boolean): number;
  /** The idle checkpoint: dump, copy to the base server (from an EC2 host), S3 upload, commit. */
  idleMs(bytes: number, onEc2: boolean): number;
  /** The part of it until the archive is off the host (dump and copy to the base server). */
  idleOffHostMs(bytes: number, onEc2: boolean): number;
  /** The return from an idle checkpoint: restore from the base server's copy (streamed to an EC2 host). */
  returnMs(bytes: number, toEc2: boolean): number;
  /** After a migration's commit: the source runtime removed, then its EC2 host terminated. */
  cleanupMs: number;
  /** RunInstances until the host is registered and ready (assumed). */
  bootMs(instanceType: string): number;
}

const gib = (bytes: number) => bytes / GiB;

/**
 * - migrate: "Piped transfer, 1 GiB" (fe30e2c, 2026-12-03): base -> host 14.5 s, host -> host 16.8 s,
 *   host -> base 14.4 s for 1 GiB; a fixed 1.5 s for planning, health check and the editor's switch
 *   (the 0.37 s warm login plus the saga's extra round trips; an estimate).
 * - idle: "Idle checkpoint and return" (e070b87): 100 MiB 4.0 s (checkpoint 0.77 s, upload 2.3 s),
 *   1 GiB 35.4 s (checkpoint 6.1 s, upload 26.7 s, against the S3 emulator at ~40 MiB/s), fitted as
 *   0.9 s + 34.1 s/GiB; from an EC2 host the archive first goes to the base server (host -> base piped
 *   transfer, 8.7 s/GiB `transfer_ms`).
 * - return: same section, 100 MiB 1.12 s, 1 GiB 4.24 s (restore from the base server's archive), fitted
 *   as 0.78 s + 3.38 s/GiB; to an EC2 host the archive is streamed there (base -> host 9.4 s/GiB).
 * - boot: 40 s for t3 and 90 s for g5 from RunInstances to sshd and registration (assumed: AWS does not
 *   publish boot times; typical Ubuntu AMIs come up in 30-60 s, GPU AMIs are larger).
 */
export const measuredDurations: Durations = {
  loginMs: 2500,
  loginRunningMs: 300,
  migrateMs: (bytes, fromEc2, toEc2) => 1500 + gib(bytes) * (fromEc2 && toEc2 ? 16_800 : fromEc2 ? 14_400 : 14_500),
  idleMs: (bytes, onEc2) => 900 + gib(bytes) * (34_100 + (onEc2 ? 8_700 : 0)),
  // The dump alone: 0.77 s at 100 MiB, 6.1 s at 1 GiB (same section), fitted as 0.2 s + 5.9 s/GiB.
  idleOffHostMs: (bytes, onEc2) => 200 + gib(bytes) * (5_900 + (onEc2 ? 8_700 : 0)),
  returnMs: (bytes, toEc2) => 780 + gib(bytes) * (3_380 + (toEc2 ? 9_400 : 0)),
  cleanupMs: 1000,
  bootMs: (instanceType) => (instanceType.startsWith('g') ? 90_000 : 40_000),
};
