// Validates Kubernetes manifests offline, as kubeconform -strict would with stored schemas:
//   kubectl kustomize deploy/kubernetes/overlays/pipeline | node deploy/kubernetes/validate.mjs
//   node deploy/kubernetes/validate.mjs FILE.yaml...
// Kubernetes kinds are checked against the OpenAPI-generated schemas of the `kubernetes-models`
// npm package (types, required fields, enums, formats); a LeaderWorkerSet against
// schemas/leaderworkerset-v1.json, its two pod templates as PodTemplateSpecs. On top, every field
// must exist in its type (a misspelt field is an error, not silently dropped by the API server):
// the field lists come from the same package's type declarations. Prints one line per object;
// exit status 1 with every problem listed when any object is invalid.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

import Ajv from "ajv";
import YAML from "yaml";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const modelsDir = path.dirname(require.resolve("kubernetes-models/package.json"));
const machineryDir = path.dirname(require.resolve("@kubernetes-models/apimachinery/package.json"));

// The module of a kind: kubernetes-models/<group>/<version>/<Kind> (core: v1/<Kind>).
function modelModule(apiVersion, kind) {
  return path.join(modelsDir, apiVersion, `${kind}.js`);
}

// --- Strict field check from the type declarations ------------------------------------------

const declarations = new Map();  // .d.ts path -> {fields: Map(name -> .d.ts of its type | null)}

// The first interface of a declaration file: its property names, and for each the declaration
// file of its element type when that is another model (plain or in an Array<>).
function declaration(file) {
  if (declarations.has(file)) return declarations.get(file);
  const text = fs.readFileSync(file, "utf8");
  const imports = new Map();
  for (const m of text.matchAll(/^import \{ (\w+) \} from "([^"]+)";$/gm)) {
    const from = m[2].startsWith(".")
      ? path.join(path.dirname(file), m[2].replace(/\.js$/, ".d.ts"))
      : m[2].startsWith("@kubernetes-models/apimachinery/")
        ? path.join(machineryDir, m[2].slice("@kubernetes-models/apimachinery/".length) + ".d.ts")
        : null;
    imports.set(m[1], from);
  }
  const body = text.match(/^export interface \w+(?: extends [\w, ]+)? \{\n([\s\S]*?)^\}/m);
  let result = null;  // a leaf (a type alias such as IntOrString, Quantity, Time)
  if (body) {
    const fields = new Map();
    for (const m of body[1].matchAll(/^ {4}"([^"]+)"\??: (?:Array<)?(\w*)/gm)) {
      fields.set(m[1], imports.get(m[2]) ?? null);
    }
    result = { fields };
  }
  declarations.set(file, result);
  return result;
}

// Unknown fields of `value` (of the type declared in `file`), as "path: ..." strings.
function unknownFields(value, file, where, out) {
  const decl = file && declaration(file);
  if (!decl || value === null || typeof value !== "object") return out;
  if (Array.isArray(value)) {
    value.forEach((v, i) => unknownFields(v, file, `${where}/${i}`, out));
    return out;
  }
  for (const [key, v] of Object.entries(value)) {
    if (!decl.fields.has(key)) {
      out.push(`${where}/${key}: unknown field (not in ${path.basename(file, ".d.ts")})`);
    } else {
      unknownFields(v, decl.fields.get(key), `${where}/${key}`, out);
    }
  }
  return out;
}

// --- Validation --------------------------------------------------------------------------------

async function validateModel(object, apiVersion, kind, where) {
  const module = modelModule(apiVersion, kind);
  if (!fs.existsSync(module)) return [`${where}: no schema for ${apiVersion} ${kind}`];
  const model = (await import(module))[kind];
  const problems = [];
  try {
    new model(object).validate();
  } catch (e) {
    problems.push(`${where}: ${e.message}`);
  }
  return unknownFields(object, module.replace(/\.js$/, ".d.ts"), where, problems);
}

const ajv = new Ajv({ allErrors: true });
const validateLws = ajv.compile(
  JSON.parse(fs.readFileSync(path.join(here, "schemas", "leaderworkerset-v1.json"), "utf8")));

async function validateLeaderWorkerSet(object, where) {
  const problems = [];
  if (!validateLws(object)) {
    for (const e of validateLws.errors) {
      const detail = e.params?.additionalProperty ? ` (${e.params.additionalProperty})` : "";
      problems.push(`${where}${e.instancePath}: ${e.message}${detail}`);
    }
  }
  const metadata = { apiVersion: "v1", kind: "Pod", metadata: object.metadata };
  problems.push(...unknownFields(metadata, modelModule("v1", "Pod").replace(/\.js$/, ".d.ts"),
                                 where, []));
  const template = object.spec?.leaderWorkerTemplate ?? {};
  for (const name of ["leaderTemplate", "workerTemplate"]) {
    if (template[name] === undefined) continue;
    problems.push(...await validateModel(template[name], "v1", "PodTemplateSpec",
                                         `${where}/spec/leaderWorkerTemplate/${name}`));
  }
  return problems;
}

async function main() {
  const files = process.argv.slice(2);
  const inputs = files.length
    ? files.map((f) => [f, fs.readFileSync(f, "utf8")])
    : [["<stdin>", fs.readFileSync(0, "utf8")]];
  let invalid = 0;
  for (const [file, text] of inputs) {
    for (const doc of YAML.parseAllDocuments(text)) {
      if (doc.errors.length) {
        console.log(`INVALID ${file}: ${doc.errors.map((e) => e.message).join("; ")}`);
        invalid++;
        continue;
      }
      const object = doc.toJS();
      if (object === null) continue;
      const { apiVersion, kind } = object;
      const name = `${kind ?? "?"} ${object.metadata?.name ?? "?"}`;
      const where = `${file}: ${name}`;
      const problems = !apiVersion || !kind
        ? [`${where}: no apiVersion or kind`]
        : apiVersion === "leaderworkerset.x-k8s.io/v1" && kind === "LeaderWorkerSet"
          ? await validateLeaderWorkerSet(object, where)
          : await validateModel(object, apiVersion, kind, where);
      if (problems.length) {
        invalid++;
        console.log(`INVALID ${name}\n  ${problems.join("\n  ")}`);
      } else {
        console.log(`valid ${apiVersion} ${name}`);
      }
    }
  }
  process.exit(invalid ? 1 : 0);
}

await main();
