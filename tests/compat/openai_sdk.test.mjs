// A real client drives the gateway unmodified: the official OpenAI SDK for
// Node (version pinned in package.json), run with node's own test runner.
//
//   GATEWAY_URL   base URL of the gateway's API, e.g. http://127.0.0.1:8080/v1
//   API_KEY       key the SDK sends as "Authorization: Bearer ..." (default
//                 sk-test-compat)
//   MODEL         a configured model served by a healthy simulator (default m)
//   MODELS        comma-separated names /v1/models must list (default m,m-plain)
//   PLAIN_MODEL   optional: a model forwarded without rewrite, under a name
//                 its backend serves (so the client's body goes up as is)
//   UNSERVED_MODEL optional: a model the gateway offers but its backend does
//                 not know: the backend's own 404 must reach the client
//   SIM_URL       optional: that simulator's own URL, to check on /sim/stats
//                 that an aborted stream cancelled the generation
//   BROKEN_MODEL  optional: a model whose backend closes streams mid-way
//   DOWN_MODEL    optional: a model whose only backend refuses connections
//
// tests/integration/test_compat.py sets all of these up and runs this file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = process.env.GATEWAY_URL;
if (!baseURL) throw new Error('GATEWAY_URL is not set (e.g. http://127.0.0.1:8080/v1)');
const apiKey = process.env.API_KEY || 'sk-test-compat';
const MODEL = process.env.MODEL || 'm';
const MODELS = (process.env.MODELS || 'm,m-plain').split(',').filter(Boolean);
const PLAIN_MODEL = process.env.PLAIN_MODEL;
const UNSERVED_MODEL = process.env.UNSERVED_MODEL;
const SIM_URL = process.env.SIM_URL;
const BROKEN_MODEL = process.env.BROKEN_MODEL;
const DOWN_MODEL = process.env.DOWN_MODEL;

const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 10000 });
const MESSAGES = [{ role: 'user', content: 'hello there' }];

// The simulator's completion: token i is the text "tok<i> ".
const toks = (n) => Array.from({ length: n }, (_, i) => `tok${i} `).join('');

function assertUsage(usage, completionTokens) {
  assert.ok(usage, 'usage is missing');
  assert.equal(usage.completion_tokens, completionTokens);
  assert.ok(usage.prompt_tokens > 0, `prompt_tokens ${usage.prompt_tokens}`);
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
}

test('chat completion, non-streaming', async () => {
  const { data: r, response } = await client.chat.completions
    .create({ model: MODEL, messages: MESSAGES, max_tokens: 5 })
    .withResponse();
  assert.equal(response.status, 200);
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(r.choices[0].message.content, toks(5));
  assert.equal(r.choices[0].finish_reason, 'length');
  assertUsage(r.usage, 5);
  // the gateway always answers with a request id; the SDK surfaces it
  assert.ok(r._request_id, 'no x-request-id on the reply');
});

test('a sane X-Request-Id from the client is echoed', async () => {
  const { response, request_id } = await client.chat.completions
    .create({ model: MODEL, messages: MESSAGES, max_tokens: 1 },
      { headers: { 'X-Request-Id': 'compat-req.42' } })
    .withResponse();
  assert.equal(response.headers.get('x-request-id'), 'compat-req.42');
  assert.equal(request_id, 'compat-req.42');
});

// A model without upstream_model: the gateway forwards the client's body
// untouched (no JSON re-serialisation), a path of its own in the gateway.
test('a model without upstream rewrite: the body goes up as is',
  { skip: PLAIN_MODEL ? false : 'PLAIN_MODEL not set' }, async () => {
    const r = await client.chat.completions.create({
      model: PLAIN_MODEL, messages: MESSAGES, max_tokens: 2,
    });
    assert.equal(r.choices[0].message.content, toks(2));
    const stream = await client.chat.completions.create({
      model: PLAIN_MODEL, messages: MESSAGES, max_tokens: 3, stream: true,
    });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
    assert.equal(text, toks(3));
  });

test("the backend's own error reply reaches the client as the SDK's error class",
  { skip: UNSERVED_MODEL ? false : 'UNSERVED_MODEL not set' }, async () => {
    await assert.rejects(
      client.chat.completions.create({ model: UNSERVED_MODEL, messages: MESSAGES, max_tokens: 1 }),
      (err) => {
        assert.ok(err instanceof OpenAI.NotFoundError, `got ${err?.constructor?.name}: ${err}`);
        assert.equal(err.status, 404);
        assert.equal(err.code, 'model_not_found');
        assert.ok(err.requestID, 'no request id on the error');
        return true;
      });
  });

test('streaming chat: chunks assemble into the text, usage chunk last', async () => {
  const stream = await client.chat.completions.create({
    model: MODEL, messages: MESSAGES, max_tokens: 8, stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let chunks = 0;
  let usage = null;
  let finish = null;
  let afterUsage = 0;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    chunks++;
    if (usage) afterUsage++;
    if (chunk.usage) {
      usage = chunk.usage;
      assert.deepEqual(chunk.choices, []);
    }
    for (const c of chunk.choices) {
      text += c.delta?.content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(text, toks(8));
  assert.ok(chunks >= 9, `only ${chunks} chunks`);
  assert.equal(finish, 'length');
  assertUsage(usage, 8);
  assert.equal(afterUsage, 0, 'chunks after the usage chunk');
});

test('streaming chat without include_usage has no usage', async () => {
  const stream = await client.chat.completions.create({
    model: MODEL, messages: MESSAGES, max_tokens: 3, stream: true,
  });
  let text = '';
  for await (const chunk of stream) {
    assert.ok(!chunk.usage, 'unexpected usage');
    text += chunk.choices[0]?.delta?.content ?? '';
  }
  assert.equal(text, toks(3));
});

test('the stream helper (chat.completions.stream) gets the final completion', async () => {
  const runner = client.chat.completions.stream({
    model: MODEL, messages: MESSAGES, max_tokens: 4,
    stream_options: { include_usage: true },
  });
  const deltas = [];
  runner.on('content', (delta) => deltas.push(delta));
  const final = await runner.finalChatCompletion();
  assert.equal(final.choices[0].message.content, toks(4));
  assert.equal(deltas.join(''), toks(4));
  assertUsage(final.usage, 4);
});

test('completions, non-streaming and streaming', async () => {
  const r = await client.completions.create({
    model: MODEL, prompt: 'abcdefgh', max_tokens: 3,
  });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices[0].text, toks(3));
  assert.equal(r.usage.prompt_tokens, 2);
  assertUsage(r.usage, 3);

  const stream = await client.completions.create({
    model: MODEL, prompt: 'abcdefgh', max_tokens: 4, stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let usage = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'text_completion');
    if (chunk.usage) usage = chunk.usage;
    text += chunk.choices[0]?.text ?? '';
  }
  assert.equal(text, toks(4));
  assertUsage(usage, 4);
});

test('embeddings (encoding_format float)', async () => {
  const r = await client.embeddings.create({
    model: MODEL, input: ['abcd', 'hello world'], encoding_format: 'float',
  });
  assert.equal(r.object, 'list');
  assert.equal(r.data.length, 2);
  for (const [i, e] of r.data.entries()) {
    assert.equal(e.object, 'embedding');
    assert.equal(e.index, i);
    assert.ok(Array.isArray(e.embedding) && e.embedding.length > 0);
    for (const x of e.embedding) assert.ok(Number.isFinite(x));
  }
  assert.ok(r.usage.prompt_tokens > 0);
});

// Without encoding_format the SDK asks for base64 and decodes it; the
// simulator answers floats whatever encoding_format says (vLLM honours it),
// so this is the simulator's gap, not the gateway's: marked todo.
test('embeddings with the SDK default (base64)', {
  todo: 'infergate-sim ignores encoding_format=base64',
}, async () => {
  const r = await client.embeddings.create({ model: MODEL, input: 'abcd' });
  const f = await client.embeddings.create({
    model: MODEL, input: 'abcd', encoding_format: 'float',
  });
  assert.equal(r.data[0].embedding.length, f.data[0].embedding.length);
});

test('models list contains the configured models', async () => {
  const ids = [];
  for await (const m of client.models.list()) {
    assert.equal(m.object, 'model');
    ids.push(m.id);
  }
  for (const name of MODELS) assert.ok(ids.includes(name), `${name} not in ${ids}`);
  assert.equal(new Set(ids).size, ids.length, `duplicates in ${ids}`);
});

test('unknown model -> OpenAI.NotFoundError (404 model_not_found)', async () => {
  await assert.rejects(
    client.chat.completions.create({
      model: 'no-such-model', messages: MESSAGES, max_tokens: 1,
    }),
    (err) => {
      assert.ok(err instanceof OpenAI.NotFoundError, `got ${err?.constructor?.name}: ${err}`);
      assert.ok(err instanceof OpenAI.APIError);
      assert.equal(err.status, 404);
      assert.equal(err.code, 'model_not_found');
      assert.equal(err.type, 'invalid_request_error');
      assert.equal(err.param, 'model');
      assert.ok(err.requestID, 'no request id on the error');
      return true;
    });
  // the same for the other endpoints
  for (const call of [
    () => client.completions.create({ model: 'no-such-model', prompt: 'x' }),
    () => client.embeddings.create({ model: 'no-such-model', input: 'x', encoding_format: 'float' }),
    () => client.chat.completions.create({ model: 'no-such-model', messages: MESSAGES, stream: true }),
  ]) {
    await assert.rejects(call(), (err) => {
      assert.ok(err instanceof OpenAI.NotFoundError, `got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.code, 'model_not_found');
      return true;
    });
  }
});

test('malformed request -> OpenAI.BadRequestError (400)', async () => {
  await assert.rejects(
    client.chat.completions.create({
      model: /** @type {any} */ (42), messages: MESSAGES, max_tokens: 1,
    }),
    (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError, `got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 400);
      assert.equal(err.type, 'invalid_request_error');
      assert.equal(err.param, 'model');
      return true;
    });
  // a missing model, and a non-boolean stream
  await assert.rejects(
    client.completions.create({ prompt: 'x' }),
    (err) => err instanceof OpenAI.BadRequestError && err.param === 'model');
  await assert.rejects(
    client.chat.completions.create({ model: MODEL, messages: MESSAGES, stream: 'yes' }),
    (err) => err instanceof OpenAI.BadRequestError && err.status === 400);
});

test('an aborted stream leaves the gateway serving', async () => {
  const before = SIM_URL ? await (await fetch(`${SIM_URL}/sim/stats`)).json() : null;
  const stream = await client.chat.completions.create({
    model: MODEL, messages: MESSAGES, max_tokens: 5000, stream: true,
  });
  let n = 0;
  for await (const chunk of stream) {
    if (++n === 3) break; // breaking out of the loop aborts the request
  }
  assert.equal(n, 3);
  if (SIM_URL) {
    let st;
    const deadline = Date.now() + 3000;
    do {
      await new Promise((r) => setTimeout(r, 50));
      st = await (await fetch(`${SIM_URL}/sim/stats`)).json();
    } while (!(st.cancelled > before.cancelled && st.active === 0) && Date.now() < deadline);
    assert.ok(st.cancelled > before.cancelled, `generation not cancelled: ${JSON.stringify(st)}`);
    assert.equal(st.active, 0);
  }
  const r = await client.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 2 });
  assert.equal(r.choices[0].message.content, toks(2));
});

test('concurrent requests all succeed', async () => {
  const rs = await Promise.all(Array.from({ length: 20 }, (_, i) =>
    client.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 1 + (i % 4) })));
  rs.forEach((r, i) => assert.equal(r.choices[0].message.content, toks(1 + (i % 4))));
});

test('a backend that breaks mid-stream surfaces as an error, never a clean end',
  { skip: BROKEN_MODEL ? false : 'BROKEN_MODEL not set' }, async () => {
    const stream = await client.chat.completions.create({
      model: BROKEN_MODEL, messages: MESSAGES, max_tokens: 10, stream: true,
    });
    let text = '';
    await assert.rejects(async () => {
      for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
    }, (err) => {
      assert.ok(err instanceof OpenAI.APIError, `got ${err?.constructor?.name}: ${err}`);
      return true;
    });
    assert.ok(text.length > 0, 'no tokens before the break');
  });

test('a backend that refuses connections -> OpenAI.InternalServerError (5xx)',
  { skip: DOWN_MODEL ? false : 'DOWN_MODEL not set' }, async () => {
    await assert.rejects(
      client.chat.completions.create({ model: DOWN_MODEL, messages: MESSAGES, max_tokens: 1 }),
      (err) => {
        assert.ok(err instanceof OpenAI.InternalServerError, `got ${err?.constructor?.name}: ${err}`);
        assert.ok([502, 503, 504].includes(err.status), `status ${err.status}`);
        return true;
      });
  });
