-- The qmail-mysql patch's tables (Iain Patterson), as its configuration page and FAQ
-- describe them.  Used by `store = qmail-mysql`: qmail-getpw and vchkpw read `mailbox`;
-- qmail-mysql-sync renders `rcpthosts`, `virtual` and `alias` into stock qmail's files.
-- Grant the qmail users SELECT only: GRANT SELECT ON qmail.* TO 'qmail'@'localhost' ...

CREATE TABLE IF NOT EXISTS mailbox (
    username      varchar(128) NOT NULL,         -- user, or user@domain in multihosting setups
    uid           int NOT NULL,                  -- owner of home (qmail-getpw checks it)
    gid           int NOT NULL,
    home          varchar(255) NOT NULL,         -- the home, not the Maildir (see ~qmail/rc)
    password      varchar(128),
    password_type varchar(32) NOT NULL DEFAULT 'Password',  -- Password | Crypt-Password | MySQL-Password
    suspended     char(1) NOT NULL DEFAULT 'N',  -- 'Y' refuses logins; mail is still delivered
    PRIMARY KEY (username)
);

-- virtual_username@virtual_host -> username (or username-ext).  A blank virtual_username is
-- the host's catch-all; ext '@' appends the local part: x@host -> username-x.
CREATE TABLE IF NOT EXISTS virtual (
    username         varchar(128) NOT NULL,
    ext              varchar(128) NOT NULL DEFAULT '',
    virtual_username varchar(128) NOT NULL DEFAULT '',
    virtual_host     varchar(255) NOT NULL,
    KEY (virtual_host, virtual_username)
);

-- Lines of ~username/.qmail-alias (alias '' = .qmail, '@' = .qmail-default).  '.', '/' or '|'
-- in alias_username start a delivery line that alias_host continues; otherwise a forward to
-- alias_username[@alias_host].  Several rows for one alias form a list.
CREATE TABLE IF NOT EXISTS alias (
    username       varchar(128) NOT NULL,
    alias          varchar(128) NOT NULL DEFAULT '',
    alias_username varchar(255) NOT NULL DEFAULT '',
    alias_host     varchar(255) NOT NULL DEFAULT '',
    KEY (username, alias)
);

CREATE TABLE IF NOT EXISTS rcpthosts (
    host varchar(255) NOT NULL,
    PRIMARY KEY (host)
);
