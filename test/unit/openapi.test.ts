import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { openApiDocument, openApiPath, routeDocs } from '../../api/openapi.js';

type Operation = { operationId: string; parameters?: { name: string; in: string }[]; requestBody?: { content: Record<string, { schema: { type?: string } }> }; responses: Record<string, unknown> };

describe('the OpenAPI document of the edge', () => {
  const doc = openApiDocument() as { openapi: string; paths: Record<string, Record<string, Operation>> };
  const operations = Object.entries(doc.paths).flatMap(([path, ops]) => Object.entries(ops).map(([method, op]) => ({ path, method, op })));

  test('Fastify paths become OpenAPI templates', () => {
    assert.equal(openApiPath('/api/runtimes/:userId/snapshots/:snapshotId'), '/api/runtimes/{userId}/snapshots/{snapshotId}');
  });

  test('one operation per documented route, each with a unique id and at least one answer', () => {
    assert.equal(doc.openapi, '3.1.0');
    assert.equal(operations.length, routeDocs.length, 'no route is documented twice');
    assert.equal(new Set(operations.map((o) => o.op.operationId)).size, operations.length);
    for (const { op } of operations) assert.ok(Object.keys(op.responses).length > 0);
  });

  test('every path template parameter is declared, and nothing else is declared in the path', () => {
    for (const { path, op } of operations) {
      const inTemplate = [...path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();
      const declared = (op.parameters ?? []).filter((p) => p.in === 'path').map((p) => p.name).sort();
      assert.deepEqual(declared, inTemplate, path);
    }
  });

  test('bodies come from the zod schemas the handlers validate with', () => {
    const migrate = doc.paths['/api/runtimes/{userId}/migrate']!.post!;
    const schema = migrate.requestBody!.content['application/json']!.schema as { type: string; properties: Record<string, unknown>; required: string[]; additionalProperties: boolean };
    assert.equal(schema.type, 'object');
    assert.ok('target_type' in schema.properties);
    assert.deepEqual(schema.required, ['target_type']);
    assert.equal(schema.additionalProperties, false, 'strict objects refuse unknown fields, and say so');
    assert.ok(migrate.parameters?.some((p) => p.in === 'query' && p.name === 'wait'));
  });
});
