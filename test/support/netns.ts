/**
 * The namespace hosts the tests run against. They live in infra/dev/namespace-hosts.ts because the main
 * command's simulated cloud boots them too; the tests keep importing them from here.
 */
export {
  containersConf,
  createNamespaceHost,
  createTestNetwork,
  destroyNamespaceHost,
  destroyTestNetwork,
  hostEnvShell,
  machineImageStore,
  podmanOn,
  storageConf,
  testSubnetFirstOctets,
  type NamespaceHostInfo,
  type NamespaceHostOptions,
  type TestNetwork,
} from '../../infra/dev/namespace-hosts.js';

import { hostEnvShell as shellOnHost, type NamespaceHostInfo as Host } from '../../infra/dev/namespace-hosts.js';

/**
 * Drops every packet into a namespace host (iptables on INPUT inside its namespace), as a security group
 * or a dead link would: connections hang rather than fail. Resolves with the undo, which is idempotent;
 * callers also run it in their `after`, so a failed test never leaves a host cut off.
 */
export async function cutNetwork(host: Host, why: string): Promise<() => Promise<void>> {
  const rule = (op: '-I' | '-D') => shellOnHost(host).run(['nsenter', `--net=/var/run/netns/${host.netns}`, 'iptables', '-w', op, 'INPUT', '-m', 'comment', '--comment', `markco-test-${why}`, '-j', 'DROP']);
  await rule('-I');
  let restored: Promise<void> | undefined;
  return () => (restored ??= rule('-D').then(() => undefined));
}
