import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LocalShell } from '../../activities/host-shell.js';
import { createDebootstrapHost, destroyDebootstrapHost, provisionScript, runtimeHostCacheDir } from './debootstrap-host.js';
import { createTestNetwork, destroyTestNetwork } from './namespace-hosts.js';

/**
 * An install step (infra/dev/bootstrap.sh): builds one debootstrap runtime host with the recipe and
 * throws it away, so the debootstrap tree, the apt lists and every package the recipe installs are in
 * .markco/cache/runtime-host. The recipe test then provisions its host from that cache without
 * contacting the Debian mirror (tests reach only loopback and 10.77.x.y). Done again only when
 * provision.sh changes.
 */
const recipeHash = createHash('sha256').update(readFileSync(provisionScript)).digest('hex').slice(0, 16);
const marker = join(runtimeHostCacheDir, `primed-${recipeHash}`);
if (existsSync(marker)) process.exit(0);

const runId = `p${randomBytes(2).toString('hex')}`;
const runDir = mkdtempSync('/var/tmp/markco-prime-');
const keyFile = join(runDir, 'key');
await new LocalShell('prime-runtime-host').run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'prime', '-f', keyFile]);
const net = await createTestNetwork(runId);
try {
  const host = await createDebootstrapHost({ net, runDir, index: 30, authorizedKeys: readFileSync(`${keyFile}.pub`, 'utf8'), imageArchives: [] });
  await destroyDebootstrapHost(host);
  for (const f of readdirSync(runtimeHostCacheDir)) if (f.startsWith('primed-')) rmSync(join(runtimeHostCacheDir, f));
  writeFileSync(marker, `${new Date().toISOString()}\n`);
  console.error(`[bootstrap] runtime-host cache primed (recipe ${recipeHash}, ${Math.round(host.provisionMs / 1000)} s)`);
} finally {
  await destroyTestNetwork(net);
  rmSync(runDir, { recursive: true, force: true });
}
