/**
 * What a new user's home holds on the first login: one project with its `mrmd.md` config and a first
 * notebook, laid out as the mrmd project format expects (numbered pages, `Projects/` with a lowercase
 * `projects` link as the seeds' late layout had).
 */
export const starterProjectDir = 'Projects/Welcome';

export const starterFiles: Record<string, string> = {
  [`${starterProjectDir}/mrmd.md`]: `# Welcome

This folder is an mrmd project. Its settings live in the \`yaml config\` blocks below.

\`\`\`yaml config
name: "Welcome"
session:
  python:
    name: "default"
    cwd: "."
\`\`\`
`,
  [`${starterProjectDir}/01-first-notebook.md`]: `# Your first notebook

Text is markdown; code blocks run in your Python runtime and keep their state between cells.

\`\`\`python
x = 42
print(f"x is {x}")
\`\`\`

\`\`\`python
import sys
sys.version
\`\`\`
`,
};

/** Marks a home as set up, so deleting the starter project does not bring it back. */
export const homeMarker = '.markco/home-initialized';
