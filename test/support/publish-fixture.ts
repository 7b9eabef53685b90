import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { codeSha256 } from '../../api/publish/saved-outputs.js';

/**
 * Published projects as a user keeps them (`<home>/Projects/<name>`), for the publishing tests and the
 * bench: one project per visibility, one unpublished, one with its own `url`, and in the public one
 * nested numbered folders, drafts, dot files, assets, a code cell with a saved output, math, a table,
 * a mermaid block and symlinks that point out of the project.
 */
export const introCode = "import math\nprint('area', round(math.pi * 2 ** 2, 2))\n";

const mrmd = (yaml: string) => `# Project configuration\n\n\`\`\`yaml config\n${yaml}\n\`\`\`\n`;

export function writeFile(path: string, content: string | Buffer): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, content);
}

/** Writes the fixture into `home` (the user's home); `outside` is a folder outside it that symlinks point to. */
export function writePublishFixture(home: string, username: string, outside: string): void {
  const projects = join(home, 'Projects');
  const handbook = join(projects, 'handbook');
  const files: Record<string, string> = {
    // Two config blocks, deep-merged in order: the second adds to `publish` and overrides `name`.
    'mrmd.md': mrmd('name: Draft title\npublish:\n  visibility: private') + '\nSome prose.\n\n' + mrmd('name: The Handbook\npublish:\n  visibility: public\n  domain: Handbook.Example.com'),
    'index.md': '# Welcome\n\nStart with the [introduction](01-intro.md) or the [setup guide](02-guide/01-setup.md#install).\n\nEnergy: $E = mc^2$.\n\n![Architecture](_assets/diagram.svg)\n',
    '01-intro.md': `# Introduction\n\nThe area of a circle:\n\n$$A = \\pi r^2$$\n\n\`\`\`python\n${introCode}\`\`\`\n\n| shape | area |\n|---|---|\n| circle | 12.57 |\n\n\`\`\`mermaid\ngraph TD; A-->B\n\`\`\`\n\n<script>document.title = 'owned'</script>\n`,
    '02-guide/index.md': '# The guide\n\nRead the [advanced tuning](02_advanced/01-tuning.qmd) chapter after [setup](01-setup.md).\n',
    '02-guide/01-setup.md': '# Setup\n\n## Install\n\n```bash\npip install mrmd\n```\n\n![Diagram](../_assets/diagram.svg)\n',
    '02-guide/02_advanced/01-tuning.qmd': '---\ntitle: Tuning for speed\n---\n\nFaster, with $\\sum_{i=1}^{n} i = \\frac{n(n+1)}{2}$.\n',
    '03-reference.md': '# Reference\n\nThe end.\n',
    'notes.txt': 'not a page\n',
    '_drafts/secret-plan.md': '# Secret plan\n\nNever published.\n',
    '.hidden.md': '# Hidden\n',
    '_assets/diagram.svg': '<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40"><rect width="120" height="40" fill="#0969da"/></svg>\n',
    '_assets/data.csv': 'x,y\n1,2\n',
    '_assets/.env': 'SECRET=1\n',
    '.mrmd/outputs/01-intro.md.json': JSON.stringify({
      version: 1,
      cells: [{ cell: 0, code_sha256: codeSha256(introCode), stdout: 'area 12.57\n', stderr: '', result: null, error: null, displayData: [] }],
    }),
  };
  for (const [path, content] of Object.entries(files)) writeFile(join(handbook, path), content);

  // Symlinks leaving the project: a page, a folder, and an asset. None may be published.
  writeFile(join(outside, 'stolen.md'), '# Stolen\n\nOutside the project.\n');
  writeFile(join(outside, 'elsewhere', 'page.md'), '# Elsewhere\n');
  symlinkSync(join(outside, 'stolen.md'), join(handbook, '04-stolen.md'));
  symlinkSync(join(outside, 'elsewhere'), join(handbook, '05-elsewhere'));
  symlinkSync(join(outside, 'stolen.md'), join(handbook, '_assets', 'stolen.svg'));
  symlinkSync('../mrmd.md', join(handbook, '_assets', 'config.txt'));
  // A symlink that stays inside the project is fine.
  symlinkSync('03-reference.md', join(handbook, '06-see-also.md'));

  writeFile(join(projects, 'unlisted-notes', 'mrmd.md'), mrmd('publish:\n  visibility: unlisted'));
  writeFile(join(projects, 'unlisted-notes', 'index.md'), '# Unlisted notes\n\nFor people with the link.\n');
  writeFile(join(projects, 'private-lab', 'mrmd.md'), mrmd('name: Private lab\npublish:\n  visibility: private'));
  writeFile(join(projects, 'private-lab', 'index.md'), '# Lab notebook\n\nOnly for the owner and collaborators.\n');
  writeFile(join(projects, 'private-lab', '01-results.md'), '# Results\n');
  writeFile(join(projects, 'unpublished', 'mrmd.md'), mrmd('name: Not yet\nsession:\n  python:\n    venv: .venv'));
  writeFile(join(projects, 'unpublished', 'index.md'), '# Work in progress\n');
  writeFile(join(projects, 'long-folder-name', 'mrmd.md'), mrmd(`publish:\n  url: "@${username}/short"`));
  writeFile(join(projects, 'long-folder-name', 'index.md'), '# Short address\n');
}
