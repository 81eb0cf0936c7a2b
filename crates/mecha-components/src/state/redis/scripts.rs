//! The Lua scripts of `state.redis`: each check and its write run as one atomic script.
//!
//! A value is a hash with the fields `data` and `version` (Dapr's layout); a plain string
//! written by an old Dapr is read as a value without an ETag and replaced on the next write.
//! Scripts answer `-1` (or `-i` for the `i`-th operation of a transaction) for an ETag or
//! first-write mismatch.

/// `KEYS[1]` → `{data, version, pttl}`, or nil when absent.
pub(super) const GET: &str = r#"
local t = redis.call("TYPE", KEYS[1])["ok"]
if t == "hash" then
  local v = redis.call("HMGET", KEYS[1], "data", "version")
  if not v[1] then return false end
  return {v[1], v[2], redis.call("PTTL", KEYS[1])}
elseif t == "string" then
  return {redis.call("GET", KEYS[1]), false, redis.call("PTTL", KEYS[1])}
end
return false
"#;

/// `KEYS[1]`, `ARGV`: data, etag (`""` for none), first-write (`"1"`/`"0"`), ttl in ms
/// (`"0"` removes any expiry) → the new version, or -1 on a mismatch.
pub(super) const SET: &str = r#"
local t = redis.call("TYPE", KEYS[1])["ok"]
local ver = false
if t == "hash" then ver = redis.call("HGET", KEYS[1], "version") end
if ARGV[2] ~= "" then
  if ver ~= ARGV[2] then return -1 end
elseif ARGV[3] == "1" and t ~= "none" then
  return -1
end
if t ~= "hash" and t ~= "none" then redis.call("DEL", KEYS[1]) end
redis.call("HSET", KEYS[1], "data", ARGV[1])
local v = redis.call("HINCRBY", KEYS[1], "version", 1)
if ARGV[4] ~= "0" then
  redis.call("PEXPIRE", KEYS[1], ARGV[4])
else
  redis.call("PERSIST", KEYS[1])
end
return v
"#;

/// `KEYS[1]`, `ARGV[1]`: the etag → 1 when deleted, -1 on a mismatch.
pub(super) const DELETE_IF: &str = r#"
if redis.call("TYPE", KEYS[1])["ok"] ~= "hash" then return -1 end
if redis.call("HGET", KEYS[1], "version") ~= ARGV[1] then return -1 end
return redis.call("DEL", KEYS[1])
"#;

/// The number of `ARGV` entries per operation of [`TRANSACT`].
pub(super) const TRANSACT_ARGS: usize = 5;

/// `KEYS[i]` is the key of operation `i`; its `ARGV` are kind (`"s"` set, `"d"` delete), data,
/// etag, first-write, ttl in ms. Every check runs first against the state the earlier
/// operations leave, then every write, so that a failing operation leaves all unapplied.
/// → the number of operations, or `-i` when operation `i` does not match.
pub(super) const TRANSACT: &str = r#"
local known = {}
local function current(k)
  local c = known[k]
  if c == nil then
    local t = redis.call("TYPE", k)["ok"]
    if t == "hash" then
      c = {exists = true, ver = redis.call("HGET", k, "version")}
    else
      c = {exists = t ~= "none", ver = false}
    end
    known[k] = c
  end
  return c
end
for i = 1, #KEYS do
  local b = (i - 1) * 5
  local c = current(KEYS[i])
  local etag = ARGV[b + 3]
  if ARGV[b + 1] == "s" then
    if etag ~= "" then
      if c.ver ~= etag then return -i end
    elseif ARGV[b + 4] == "1" and c.exists then
      return -i
    end
    local n = 1
    if c.ver then n = (tonumber(c.ver) or 0) + 1 end
    known[KEYS[i]] = {exists = true, ver = tostring(n)}
  else
    if etag ~= "" and c.ver ~= etag then return -i end
    known[KEYS[i]] = {exists = false, ver = false}
  end
end
for i = 1, #KEYS do
  local k = KEYS[i]
  local b = (i - 1) * 5
  if ARGV[b + 1] == "s" then
    local t = redis.call("TYPE", k)["ok"]
    if t ~= "hash" and t ~= "none" then redis.call("DEL", k) end
    redis.call("HSET", k, "data", ARGV[b + 2])
    redis.call("HINCRBY", k, "version", 1)
    if ARGV[b + 5] ~= "0" then
      redis.call("PEXPIRE", k, ARGV[b + 5])
    else
      redis.call("PERSIST", k)
    end
  else
    redis.call("DEL", k)
  end
end
return #KEYS
"#;
