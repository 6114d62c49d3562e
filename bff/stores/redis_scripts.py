"""The Lua scripts of `RedisStore` (`bff.stores.redis`): each names exactly one key, so it runs
in that key's hash slot, atomically."""

from __future__ import annotations

__all__ = ["ADD", "INDEX", "RELEASE", "WRITE"]

# KEYS: record; ARGV: value, ms, mode, expected, sub, sid.
# mode: "set" (always), "present" (only if the record exists), "expect" (only if its value equals expected).
# sub/sid: "" when absent, else "=" followed by the value (so that an empty string is a value).
WRITE = """
local record, ms, mode = KEYS[1], tonumber(ARGV[2]), ARGV[3]
if mode ~= 'set' then
  local current = redis.call('HGET', record, 'v')
  if not current then return 0 end
  if mode == 'expect' and current ~= ARGV[4] then return 0 end
end
local fields = {'v', ARGV[1]}
if ARGV[5] ~= '' then table.insert(fields, 'sub'); table.insert(fields, string.sub(ARGV[5], 2)) end
if ARGV[6] ~= '' then table.insert(fields, 'sid'); table.insert(fields, string.sub(ARGV[6], 2)) end
redis.call('DEL', record)
redis.call('HSET', record, unpack(fields))
redis.call('PEXPIRE', record, ms)
return 1
"""

# KEYS: record; ARGV: value, ms. A one-time marker: write only if no live record has the key.
ADD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: index set; ARGV: member, ms. Add the member; the set lives as long as its longest member.
INDEX = """
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

# KEYS: lease; ARGV: token. Delete the lease only if we still own it.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
