import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createProxyTraffic, histogramSamples, renderExposition } from '../../api/metrics.js';

describe('Prometheus exposition', () => {
  test('HELP and TYPE once per family, labels escaped, infinities spelled as Prometheus reads them', () => {
    const text = renderExposition([
      { name: 'x_total', help: 'line one\nline two', type: 'counter', samples: [{ labels: { path: 'a"b\\c\nd' }, value: 3 }, { value: Infinity }] },
      { name: 'y', help: 'empty', type: 'gauge', samples: [] },
    ]);
    assert.equal(
      text,
      ['# HELP x_total line one\\nline two', '# TYPE x_total counter', 'x_total{path="a\\"b\\\\c\\nd"} 3', 'x_total +Inf', '# HELP y empty', '# TYPE y gauge', ''].join('\n'),
    );
  });

  test('histograms: cumulative buckets, +Inf equal to the count, then sum and count', () => {
    const samples = histogramSamples([{ labels: { phase: 'restore' }, counts: [1, 3], count: 4, sum: 9.5 }], [0.5, 1]);
    assert.deepEqual(
      samples.map((s) => `${s.suffix}${JSON.stringify(s.labels)} ${s.value}`),
      [
        '_bucket{"phase":"restore","le":"0.5"} 1',
        '_bucket{"phase":"restore","le":"1"} 3',
        '_bucket{"phase":"restore","le":"+Inf"} 4',
        '_sum{"phase":"restore"} 9.5',
        '_count{"phase":"restore"} 4',
      ],
    );
  });

  test('proxy traffic adds up requests by outcome, bytes by direction and upgrades by outcome', () => {
    const traffic = createProxyTraffic();
    traffic.http('completed', 10, 200);
    traffic.http('completed', 5, 50);
    traffic.http('upstream-error', 7, 0);
    traffic.upgrade('opened');
    const text = renderExposition(traffic.families());
    assert.match(text, /^markco_proxy_http_requests_total\{outcome="completed"\} 2$/m);
    assert.match(text, /^markco_proxy_http_requests_total\{outcome="upstream-error"\} 1$/m);
    assert.match(text, /^markco_proxy_http_bytes_total\{direction="up"\} 22$/m);
    assert.match(text, /^markco_proxy_http_bytes_total\{direction="down"\} 250$/m);
    assert.match(text, /^markco_proxy_websocket_upgrades_total\{outcome="opened"\} 1$/m);
  });
});
