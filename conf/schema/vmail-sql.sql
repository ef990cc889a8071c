-- vmail-sql's tables (vmail-sql for Exim, as read by tpop3d).  Used by `store = vmail-sql`:
-- vchkpw logs popbox users in; vdelivermail delivers in the order of vmail-sql's Exim directors
-- (forwarder rows, then the popbox, then the `_default_` forwarder).

CREATE TABLE IF NOT EXISTS domain (
    domain_name   varchar(255) NOT NULL PRIMARY KEY,
    unix_user     varchar(255),      -- owner of the domain's mail files: a user name or a uid
    password_hash varchar(255),      -- the domain administrator's password (not used here)
    path          varchar(255),      -- base directory of the domain's mailboxes
    max_popbox    int
);

CREATE TABLE IF NOT EXISTS popbox (
    domain_name   varchar(255) NOT NULL,
    local_part    varchar(255) NOT NULL,
    password_hash varchar(255),      -- {md5}|{crypt}|{crypt_md5}|{plaintext}|{mysql}|{sha1}hash; no prefix = md5
    mbox_name     varchar(255),      -- below domain.path: an mbox file, or a Maildir when it ends in '/'
    PRIMARY KEY (domain_name(16), local_part(32))
);

-- another name for a domain: mail and logins for user@alias act on user@domain_name
CREATE TABLE IF NOT EXISTS domain_alias (
    alias       varchar(255) NOT NULL PRIMARY KEY,
    domain_name varchar(255) NOT NULL
);

-- local_part@domain_name goes to remote_name (several rows = several targets);
-- local_part '_default_' catches what no forwarder or popbox takes.
CREATE TABLE IF NOT EXISTS forwarder (
    domain_name varchar(255) NOT NULL,
    local_part  varchar(255) NOT NULL,
    remote_name varchar(255) NOT NULL,
    KEY (domain_name(16), local_part(32))
);
