import { chromium, type Browser } from 'playwright-core';
import { requireExecutable } from '../../infra/dev/prerequisites.js';

/**
 * Headless Chromium for browser tests: Debian's `chromium` (infra/dev/bootstrap.sh installs it with
 * fonts) driven by playwright-core, with the flags verified on these machines (ENVIRONMENT.md). A
 * missing Chromium fails the test with a message naming it: browser tests never skip.
 */
export async function launchChromium(opts: { pathEnv?: string } = {}): Promise<Browser> {
  const executablePath = requireExecutable('chromium', opts.pathEnv);
  return chromium.launch({
    executablePath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}
