// Validates Prometheus Operator objects (a JSON list on stdin) against the
// schemas of the npm package @kubernetes-models/prometheus-operator, which are
// generated from the Operator's API types. Prints a JSON list: the problems of
// each object, [] when it is valid.
//
// The package's validators accept fields they do not know (like the CRDs,
// whose unknown fields the API server prunes, or rejects under kubectl's
// strict field validation). A misspelt field would pass silently, so every
// field is also probed: a field the schema knows rejects a value of a wrong
// type at its own path; a field that accepts anything is reported as unknown.
//
// Usage: node operator_crd_validate.mjs <folder holding node_modules>

import { pathToFileURL } from "node:url";
import { join } from "node:path";
import { readFileSync } from "node:fs";

const packageDir = join(process.argv[2], "node_modules", "@kubernetes-models", "prometheus-operator");
const models = await import(pathToFileURL(join(packageDir, "monitoring.coreos.com", "v1", "index.js")).href);

const PROBES = [true, "probe-of-a-wrong-type"];

function schemaErrors(Model, object) {
  try {
    new Model(object).validate();
    return [];
  } catch (error) {
    if (!Array.isArray(error.errors)) throw error;
    return error.errors;
  }
}

function unknownFields(Model, object) {
  const copy = structuredClone(object);
  const unknown = [];
  function visit(node, path) {
    if (Array.isArray(node)) {
      node.forEach((item, i) => visit(item, [...path, i]));
      return;
    }
    if (node === null || typeof node !== "object") return;
    for (const key of Object.keys(node)) {
      if (path.length === 0 && (key === "apiVersion" || key === "kind")) continue; // the model's own
      const fieldPath = [...path, key];
      const pointer = "/" + fieldPath.join("/");
      const original = node[key];
      const known = PROBES.some((probe) => {
        node[key] = probe;
        return schemaErrors(Model, copy).some(
          (e) => e.instancePath === pointer || e.instancePath.startsWith(pointer + "/"),
        );
      });
      node[key] = original;
      if (known) visit(original, fieldPath);
      else unknown.push(`${pointer}: not a field of ${Model.kind}'s schema`);
    }
  }
  visit(copy, []);
  return unknown;
}

function problems(object) {
  const Model = models[object.kind];
  if (!Model || Model.apiVersion !== object.apiVersion || typeof Model.kind !== "string") {
    return [`no Prometheus Operator schema for ${object.apiVersion} ${object.kind}`];
  }
  const errors = schemaErrors(Model, object).map((e) => `${e.instancePath || "/"}: ${e.message}`);
  return errors.length ? errors : unknownFields(Model, object);
}

const objects = JSON.parse(readFileSync(0, "utf8"));
console.log(JSON.stringify(objects.map(problems)));
