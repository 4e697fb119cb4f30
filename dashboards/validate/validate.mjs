#!/usr/bin/env node
// Type-checks the segwatch Grafana dashboards against Grafana's published schema
// types (@grafana/schema) and runs a few structural checks.
//
//   npm ci && node validate.mjs [dashboard.json ...]     (default: ../*.json)
//
// For each dashboard a TypeScript file is generated in .generated/ that assigns
//   - the whole dashboard JSON to a const of type Dashboard,
//   - each panel's `options` to the panel plugin's Options type
//     (stat, bargauge, table, timeseries, heatmap),
//   - each panel's `fieldConfig.defaults.custom` to the plugin's FieldConfig type,
//   - each field override property to the type of the property it overrides,
// and `tsc --noEmit --strict` is run over them.  A wrong field type, a misspelt
// property or a missing required property fails the check.  Exit code 0 = all good.

import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const GEN = join(HERE, '.generated');
const SCHEMA_PKG = join(HERE, 'node_modules', '@grafana', 'schema');
const TSC = join(HERE, 'node_modules', 'typescript', 'bin', 'tsc');

// Panel plugins whose option types @grafana/schema publishes and that the dashboards use.
const PANEL_TYPES = {
  stat: { module: 'stat/panelcfg/x/StatPanelCfg_types.gen', fieldConfig: false },
  bargauge: { module: 'bargauge/panelcfg/x/BarGaugePanelCfg_types.gen', fieldConfig: false },
  table: { module: 'table/panelcfg/x/TablePanelCfg_types.gen', fieldConfig: true },
  timeseries: { module: 'timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen', fieldConfig: true },
  heatmap: { module: 'heatmap/panelcfg/x/HeatmapPanelCfg_types.gen', fieldConfig: true },
};
// Datasources provisioned by deploy/grafana/provisioning/datasources/segwatch.yml.
const DATASOURCES = {
  prometheus: 'prometheus',
  'segwatch-postgres': 'grafana-postgresql-datasource',
  '-- Grafana --': 'grafana',
};

function fail(msg) {
  console.error(`validate: ${msg}`);
  process.exit(2);
}

if (!existsSync(SCHEMA_PKG) || !existsSync(TSC)) {
  fail('node_modules missing: run `npm ci` in dashboards/validate first');
}
const schemaPkg = JSON.parse(readFileSync(join(SCHEMA_PKG, 'package.json'), 'utf8'));
const exportsMap = schemaPkg.exports ?? {};
const moduleSpecifier = (m) => `@grafana/schema/dist/esm/raw/composable/${m}`;
for (const [type, { module }] of Object.entries(PANEL_TYPES)) {
  if (!(`./dist/esm/raw/composable/${module}` in exportsMap)) {
    fail(`@grafana/schema ${schemaPkg.version} does not export the ${type} panel types (${module})`);
  }
}
// The current dashboard schema version, from the package's own defaults.
const { defaultDashboard } = await import('@grafana/schema');
const CURRENT_SCHEMA_VERSION = defaultDashboard.schemaVersion;

const files = process.argv.slice(2).length
  ? process.argv.slice(2).map((f) => resolve(f))
  : readdirSync(resolve(HERE, '..'))
      .filter((f) => f.endsWith('.json'))
      .sort()
      .map((f) => resolve(HERE, '..', f));
if (files.length === 0) fail('no dashboard JSON files found');

const lit = (v) => JSON.stringify(v, null, 2);
const ident = (s) => s.replace(/[^A-Za-z0-9_]/g, '_');

function allPanels(dash) {
  const out = [];
  for (const p of dash.panels ?? []) {
    out.push(p);
    for (const q of p.panels ?? []) out.push(q);
  }
  return out;
}

// ---- structural checks (things the types cannot express) --------------------
function structuralErrors(file, dash, seenUids) {
  const errors = [];
  const err = (m) => errors.push(`${basename(file)}: ${m}`);
  if (typeof dash.uid !== 'string' || !/^[A-Za-z0-9_-]{1,40}$/.test(dash.uid)) err(`bad uid ${dash.uid}`);
  else if (seenUids.has(dash.uid)) err(`uid ${dash.uid} also used by ${seenUids.get(dash.uid)}`);
  else seenUids.set(dash.uid, basename(file));
  if (dash.schemaVersion !== CURRENT_SCHEMA_VERSION) {
    err(`schemaVersion ${JSON.stringify(dash.schemaVersion)}, current is ${CURRENT_SCHEMA_VERSION}`);
  }
  if (!dash.title) err('no title');
  const checkDs = (where, ds) => {
    if (ds == null) return;
    if (typeof ds !== 'object') return err(`${where}: datasource must be a {type, uid} reference`);
    if (ds.uid && ds.uid.startsWith('$')) return;
    if (!(ds.uid in DATASOURCES)) err(`${where}: unknown datasource uid ${ds.uid}`);
    else if (ds.type && ds.type !== DATASOURCES[ds.uid]) err(`${where}: datasource ${ds.uid} has type ${ds.type}`);
  };
  const ids = new Set();
  for (const p of allPanels(dash)) {
    const where = `panel ${p.id} "${p.title}"`;
    if (ids.has(p.id)) err(`${where}: duplicate panel id`);
    ids.add(p.id);
    const g = p.gridPos;
    if (!g) err(`${where}: no gridPos`);
    else if (g.x < 0 || g.w < 1 || g.x + g.w > 24 || g.h < 1 || g.y < 0) err(`${where}: gridPos out of the 24-column grid`);
    if (p.type === 'row') continue;
    if (!p.title) err(`panel ${p.id}: no title`);
    checkDs(where, p.datasource);
    const refIds = new Set();
    for (const t of p.targets ?? []) {
      checkDs(`${where} target ${t.refId}`, t.datasource);
      if (refIds.has(t.refId)) err(`${where}: duplicate refId ${t.refId}`);
      refIds.add(t.refId);
      const dsUid = (t.datasource ?? p.datasource)?.uid;
      if (dsUid === 'prometheus' && !(typeof t.expr === 'string' && t.expr.trim())) err(`${where}: empty PromQL`);
      if (dsUid === 'segwatch-postgres') {
        if (!/\bfrom\s+case_structure_results\b/i.test(t.rawSql ?? '')) {
          err(`${where}: SQL must read the case_structure_results view`);
        }
      }
    }
    if ((p.targets ?? []).length === 0) err(`${where}: no queries`);
  }
  for (const v of dash.templating?.list ?? []) checkDs(`variable ${v.name}`, v.datasource);
  return errors;
}

// ---- TypeScript generation ----------------------------------------------------
function generate(file, dash) {
  const name = basename(file, '.json');
  const imports = new Map();
  const decls = [];
  const used = new Set();
  const alias = (type) => {
    const a = ident(type.charAt(0).toUpperCase() + type.slice(1));
    imports.set(a, moduleSpecifier(PANEL_TYPES[type].module));
    used.add(type);
    return a;
  };
  decls.push(`// the whole dashboard\nexport const dashboard: JsonOf<Dashboard> = ${lit(dash)};`);
  for (const p of allPanels(dash)) {
    if (p.type === 'row') continue;
    const where = `panel ${p.id} (${p.type}) "${(p.title ?? '').replace(/\*\//g, '')}"`;
    const spec = PANEL_TYPES[p.type];
    const fc = p.fieldConfig ?? { defaults: {}, overrides: [] };
    const base = `p${ident(String(p.id))}`;
    if (spec) {
      const a = alias(p.type);
      if (p.options === undefined) {
        decls.push(`// ${where}: options missing\nexport const ${base}_options: JsonOf<${a}.Options> = undefined;`);
      } else {
        decls.push(`// ${where}: options\nexport const ${base}_options: JsonOf<${a}.Options> = ${lit(p.options)};`);
      }
      if (fc.defaults?.custom !== undefined) {
        const t = spec.fieldConfig ? `PartialJsonOf<${a}.FieldConfig>` : 'Record<string, never>';
        decls.push(`// ${where}: fieldConfig.defaults.custom\nexport const ${base}_custom: ${t} = ${lit(fc.defaults.custom)};`);
      }
    }
    (fc.overrides ?? []).forEach((o, i) => {
      (o.properties ?? []).forEach((prop, j) => {
        const path = String(prop.id).split('.');
        let t;
        if (path[0] === 'custom') {
          if (!spec) return; // unknown plugin: the Dashboard type is all we can check
          if (!spec.fieldConfig) {
            t = 'never';
          } else {
            t = `NonNullable<JsonOf<${alias(p.type)}.FieldConfig>>`;
            path.shift();
          }
        } else {
          t = 'NonNullable<JsonOf<FieldConfig>>';
        }
        for (const k of path) t = `NonNullable<${t}[${JSON.stringify(k)}]>`;
        decls.push(
          `// ${where}: fieldConfig.overrides[${i}] (${JSON.stringify(o.matcher?.options)}) property ${prop.id}\n` +
            `export const ${base}_o${i}_${j}: ${t} = ${lit(prop.value)};`,
        );
      });
    });
  }
  const head = [
    `// Generated by dashboards/validate/validate.mjs from ${basename(file)}; do not edit.`,
    `import type { Dashboard, FieldConfig } from '@grafana/schema';`,
    `import type { JsonOf, PartialJsonOf } from '../json-types';`,
    ...[...imports].map(([a, m]) => `import type * as ${a} from '${m}';`),
    '',
  ];
  const out = join(GEN, `${ident(name)}.ts`);
  writeFileSync(out, head.join('\n') + decls.join('\n\n') + '\n');
  return { out, panelTypes: [...used] };
}

// ---- main ---------------------------------------------------------------------
rmSync(GEN, { recursive: true, force: true });
mkdirSync(GEN, { recursive: true });
const seenUids = new Map();
const structural = [];
const summary = [];
for (const file of files) {
  let dash;
  try {
    dash = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    structural.push(`${basename(file)}: not valid JSON: ${e.message}`);
    continue;
  }
  structural.push(...structuralErrors(file, dash, seenUids));
  const { panelTypes } = generate(file, dash);
  const untyped = [...new Set(allPanels(dash).map((p) => p.type))].filter((t) => t !== 'row' && !PANEL_TYPES[t]);
  summary.push(
    `${basename(file)}: uid ${dash.uid}, ${allPanels(dash).length} panels, options typed for ${panelTypes.sort().join(', ')}` +
      (untyped.length ? `; no published option types for ${untyped.join(', ')}` : ''),
  );
}

const tsc = spawnSync(process.execPath, [TSC, '--noEmit', '--strict', '-p', join(HERE, 'tsconfig.json')], {
  cwd: HERE,
  encoding: 'utf8',
});
const tscOutput = (tsc.stdout + tsc.stderr).trim();

for (const line of summary) console.log(`  ${line}`);
let ok = true;
if (structural.length) {
  ok = false;
  console.log('structural check FAILED:');
  for (const e of structural) console.log(`  ${e}`);
}
if (tsc.status !== 0) {
  ok = false;
  console.log(`type check (tsc --noEmit --strict, @grafana/schema ${schemaPkg.version}) FAILED:`);
  console.log(tscOutput.replace(/^/gm, '  '));
}
if (!ok) process.exit(1);
console.log(
  `OK: ${files.length} dashboard(s) type-check against @grafana/schema ${schemaPkg.version} ` +
    `(schemaVersion ${CURRENT_SCHEMA_VERSION}) and pass the structural checks`,
);
