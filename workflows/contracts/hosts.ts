/** Hosts: the base server and EC2 instances that run users' containers. Plain JSON, no classes. */
export const HostKinds = ['base', 'ec2'] as const;
export type HostKind = (typeof HostKinds)[number];

export const HostStates = ['provisioning', 'booting', 'ready', 'draining', 'terminating', 'terminated', 'failed'] as const;
export type HostState = (typeof HostStates)[number];

/** Host ids double as parts of workflow ids and file names: keep them to this alphabet. */
export const hostIdPattern = /^[a-z0-9][a-z0-9.-]{0,62}$/;

/** What the control plane needs to reach a host. The base server is reached locally, others over ssh. */
export interface HostConnection {
  hostId: string;
  kind: HostKind;
  /** Address other hosts and the workers reach this host at (ssh for EC2 hosts). */
  address: string;
  sshPort?: number;
  sshUser?: string;
  /** Pinned host key: an OpenSSH public key line ("ssh-ed25519 AAAA...") or a "SHA256:..." fingerprint. */
  hostKey?: string;
  /** Prefix commands with `sudo -n` (EC2 hosts log in as an unprivileged user). */
  sudo?: boolean;
}

export interface RegisterHostInput extends HostConnection {
  instanceId?: string;
  instanceType?: string;
  gpu?: boolean;
}

/** What a probe of a host found: the versions that decide whether it can take checkpoints. */
export interface HostFacts {
  podmanVersion: string;
  ociRuntime: string;
  criuVersion: string;
  kernel: string;
  cpus: number;
  memoryBytes: number;
  cgroupVersion: string;
  /**
   * Whether root on the host holds CAP_SYS_RESOURCE. CRIU reads every dumped process's rlimits, which
   * the kernel allows across users only with that capability; without it (some VM sandboxes) only
   * processes running as uid 0 can be checkpointed, so runtimes there run as uid 0 with every
   * capability dropped instead of as the image's unprivileged user.
   */
  rootHasSysResource: boolean;
  /**
   * podman's storage roots (`podman info` GraphRoot, RunRoot). A checkpoint holds paths under them, and
   * a migration rewrites the source's into the target's. Absent on hosts probed before it was recorded.
   */
  storageRoots?: { graphRoot: string; runRoot: string };
}

export interface RegisterHostResult {
  hostId: string;
  state: HostState;
  facts: HostFacts;
}

/** The oldest CRIU that checkpoints TCP sockets and passes `criu check` on our kernels. */
export const minimumCriuVersion = '4.2';
