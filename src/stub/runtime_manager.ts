/**
 * The tenant id rule of `realm-server`, `RuntimeManager::validate_tenant_id` in
 * `runtime_manager.rs`: the one piece of that module the stub needs. The dispatcher applies it
 * to every `generate`, and the stub refuses, when it starts, an API key whose tenant breaks it.
 *
 * @module
 */

import { utf8 } from "./serde_json.ts";

/**
 * Why `tenantId` breaks the server's rule (lengths in UTF-8 bytes, Unicode alphanumerics, `-` and
 * `_`), in the server's words; `undefined` when it follows it.
 *
 * @example
 * ```ts
 * import { tenantIdProblem } from "./runtime_manager.ts";
 *
 * const problem = tenantIdProblem("a"); // "Tenant ID must be between 3 and 64 characters, got 1"
 * const none = tenantIdProblem("tenant-a"); // undefined
 * ```
 */
export function tenantIdProblem(tenantId: string): string | undefined {
  const length = utf8.encode(tenantId).length;
  if (length < 3 || length > 64) {
    return `Tenant ID must be between 3 and 64 characters, got ${length}`;
  }
  if (!/^[\p{Alphabetic}\p{Nd}\p{Nl}\p{No}_-]*$/u.test(tenantId)) {
    return "Tenant ID must contain only alphanumeric characters, hyphens, and underscores";
  }
  return undefined;
}
