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
