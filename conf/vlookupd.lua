-- vlookupd.lua: Dovecot's passdb and userdb for vpopmail users, asking vpop's lookup daemon.
--
-- Dovecot 2.4 has no checkpassword passdb any more (so no vchkpw) and refuses MD5-crypt hashes
-- by default.  This script hands Dovecot no hash at all: vlookupd decides the login itself with
-- vchkpw's rules (login forms, default domain, alias domains, NO_POP/NO_IMAP/NO_WEBMAIL and the
-- domain limits, the hash schemes vpopmail wrote, lastauth, roaming relay) and returns the mail
-- uid/gid, the home and the Maildir++ quota.  Works on every vpop store (CDB, MySQL, qmail-mysql,
-- vmail-sql).  Debian: apt-get install dovecot-auth-lua lua-socket.  See dovecot-lua.conf.sample.
--
-- Settings: the socket is vpop's lookup_socket (and the wait lookup_timeout), read from the vpop
-- settings file named by VPOP_CONFIG (Dovecot: import_environment) or /etc/vpop/vpop.conf.  With
-- Dovecot 2.4, lua_settings { socket = ..., timeout = ..., quota = ... } override them.
-- quota = rule (2.3's userdb quota_rule, the default), size (2.4's quota_storage_size and
-- quota_message_count) or none.
--
-- The wire format is vlookupd's VL1 (vlookupd-protocol.md): a header line "VL1 word length" and
-- NUL-terminated key/value fields.  A daemon that cannot be reached, or answers "temp", is an
-- internal (temporary) failure: Dovecot tells the client to try again later.

local unix = require("socket.unix")

local config = { socket = nil, timeout = 5, quota = "rule", settings = nil }
local connection = nil

local function trim(text)
  return (text:gsub("^%s+", ""):gsub("%s+$", ""))
end

local function read_vpop_settings()
  local path = os.getenv("VPOP_CONFIG")
  if path == nil or path == "" then
    path = "/etc/vpop/vpop.conf"
  end
  local handle = io.open(path, "r")
  if handle == nil then
    return
  end
  for line in handle:lines() do
    local stripped = trim(line)
    if stripped ~= "" and stripped:sub(1, 1) ~= "#" then
      local key, value = stripped:match("^([%w_]+)%s*=%s*(.-)$")
      if key == "lookup_socket" and config.socket == nil then
        config.socket = value
      elseif key == "lookup_timeout" then
        config.timeout = tonumber(value) or config.timeout
      end
    end
  end
  handle:close()
end

local function configure(args)
  if type(args) == "table" then
    config.socket = args.socket or config.socket
    config.timeout = tonumber(args.timeout) or config.timeout
    config.quota = args.quota or config.quota
  end
  if config.socket == nil then
    read_vpop_settings()
  end
end

-- Dovecot 2.4 passes lua_settings here; 2.3 calls it without arguments.
function script_init(args)
  configure(args)
  return 0
end

local function frame(word, fields)
  local parts = {}
  for _, pair in ipairs(fields) do
    local key, value = pair[1], tostring(pair[2] or "")
    if value:find("\0", 1, true) then
      return nil
    end
    parts[#parts + 1] = key .. "\0" .. value .. "\0"
  end
  local body = table.concat(parts)
  return "VL1 " .. word .. " " .. #body .. "\n" .. body
end

local function parse(body)
  local fields, pos = {}, 1
  while pos <= #body do
    local key_end = body:find("\0", pos, true)
    local value_end = key_end and body:find("\0", key_end + 1, true)
    if value_end == nil then
      return nil
    end
    local key = body:sub(pos, key_end - 1)
    if fields[key] == nil then
      fields[key] = body:sub(key_end + 1, value_end - 1)
    end
    pos = value_end + 1
  end
  return fields
end

local function disconnect()
  if connection ~= nil then
    connection:close()
    connection = nil
  end
end

local function exchange(request)
  if connection == nil then
    if config.socket == nil or config.socket == "none" then
      return nil, "lookup_socket is not set"
    end
    local sock = unix.stream()
    sock:settimeout(config.timeout)
    local ok, err = sock:connect(config.socket)
    if not ok then
      sock:close()
      return nil, "cannot connect to " .. config.socket .. ": " .. tostring(err)
    end
    connection = sock
  end
  connection:settimeout(config.timeout)
  local sent, err = connection:send(request)
  if sent == nil then
    disconnect()
    return nil, "send: " .. tostring(err)
  end
  local header
  header, err = connection:receive("*l")
  if header == nil then
    disconnect()
    return nil, "receive: " .. tostring(err)
  end
  local word, length = header:match("^VL1 ([%l%-]+) (%d+)$")
  if word == nil then
    disconnect()
    return nil, "not a VL1 answer"
  end
  local body = ""
  if tonumber(length) > 0 then
    body, err = connection:receive(tonumber(length))
    if body == nil then
      disconnect()
      return nil, "receive: " .. tostring(err)
    end
  end
  local fields = parse(body)
  if fields == nil then
    disconnect()
    return nil, "a damaged answer"
  end
  return word, fields
end

-- One request; a connection the daemon closed while idle is opened again once.
local function ask(word, fields)
  local request = frame(word, fields)
  if request == nil then
    return nil, "a field holds a NUL"
  end
  local fresh = connection == nil
  local status, answer = exchange(request)
  if status == nil and not fresh then
    status, answer = exchange(request)
  end
  return status, answer
end

local function auth_request(req, password, lookup)
  return {
    {"login", req.user}, {"password", password or ""}, {"lookup", lookup and "1" or "0"},
    {"SERVICE", req.service}, {"TCPLOCALPORT", req.local_port}, {"TCPREMOTEIP", req.remote_ip},
    {"TCPLOCALIP", req.local_ip}, {"log", "1"}, {"record", lookup and "0" or "1"},
  }
end

local function userdb_fields(answer, prefix)
  local fields = {}
  fields[prefix .. "uid"] = answer.uid
  fields[prefix .. "gid"] = answer.gid
  fields[prefix .. "home"] = answer.home
  if answer.mailbox ~= nil and answer.mailbox ~= "" then
    fields[prefix .. "mail"] = answer.mailbox:sub(-1) == "/" and "maildir:" .. answer.mailbox
                               or "mbox:" .. answer.mailbox:match("^(.*)/[^/]*$") .. ":INBOX=" .. answer.mailbox
  end
  if config.quota == "rule" and answer.quota_rule ~= nil then
    fields[prefix .. "quota_rule"] = answer.quota_rule
  elseif config.quota == "size" then
    if answer.quota_bytes ~= nil then
      fields[prefix .. "quota_storage_size"] = answer.quota_bytes .. "B"
    end
    if answer.quota_messages ~= nil then
      fields[prefix .. "quota_message_count"] = answer.quota_messages
    end
  end
  return fields
end

local function failed(req, answer)
  req:log_error("vlookupd: " .. tostring(answer and answer.message or answer))
end

function auth_password_verify(req, password)
  local status, answer = ask("auth", auth_request(req, password, false))
  if status == "ok" then
    local fields = userdb_fields(answer, "userdb_")
    fields.user = answer.session_user  -- user@domain, as vchkpw keeps USER under Dovecot
    return dovecot.auth.PASSDB_RESULT_OK, fields
  elseif status == "refused" then
    if answer.message == "no such user" then
      return dovecot.auth.PASSDB_RESULT_USER_UNKNOWN, ""
    elseif answer.message == "service denied" or answer.message == "suspended" then
      return dovecot.auth.PASSDB_RESULT_USER_DISABLED, ""
    end
    return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, ""
  end
  failed(req, answer)
  return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, ""
end

function auth_passdb_lookup(req)
  -- Dovecot asks for a password only for mechanisms that need one (CRAM-MD5 ...), which this
  -- passdb does not offer: vlookupd never hands out hashes.
  return dovecot.auth.PASSDB_RESULT_SCHEME_NOT_AVAILABLE, ""
end

function auth_userdb_lookup(req)
  local status, answer = ask("auth", auth_request(req, "", true))
  if status == "ok" then
    return dovecot.auth.USERDB_RESULT_OK, userdb_fields(answer, "")
  elseif status == "refused" then
    return dovecot.auth.USERDB_RESULT_USER_UNKNOWN, ""
  end
  failed(req, answer)
  return dovecot.auth.USERDB_RESULT_INTERNAL_FAILURE, ""
end

configure(nil)
