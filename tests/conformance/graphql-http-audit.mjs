// Runs the GraphQL over HTTP audit suite of `graphql-http` (the spec's reference
// implementation) against a live server: node graphql-http-audit.mjs http://127.0.0.1:8080/graphql
// Exits non-zero when any audit fails (MUST errors and SHOULD warnings alike).
import { serverAudits } from 'graphql-http';

const url = process.argv[2] ?? 'http://127.0.0.1:8080/graphql';
let ok = 0;
const problems = [];
for (const audit of serverAudits({ url, fetchFn: fetch })) {
  const result = await audit.fn();
  if (result.status === 'ok') {
    ok += 1;
  } else {
    problems.push(`${result.status.toUpperCase()} ${audit.name}: ${result.reason}`);
  }
}
for (const p of problems) console.log(p);
const notices = problems.filter((p) => p.startsWith('NOTICE')).length;
const failures = problems.length - notices;
console.log(`graphql-http audit: ${ok} ok, ${notices} notices, ${failures} failed`);
process.exit(failures === 0 ? 0 : 1);
