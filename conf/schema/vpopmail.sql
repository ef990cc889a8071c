-- vpopmail's MySQL store (vpopmail 5.4 layout, with vpopmail 5.6's wider columns so that
-- $6$ and bcrypt hashes fit).  Used by `store = mysql`.

-- many_domains = yes (vpopmail's default): one table for all domains.
CREATE TABLE IF NOT EXISTS vpopmail (
    pw_name         char(64) NOT NULL,
    pw_domain       char(96) NOT NULL,
    pw_passwd       char(128),
    pw_uid          int,            -- 0/1: APOP flag, not a uid
    pw_gid          int,            -- flag bits (NO_POP 0x02, NO_IMAP 0x08, BOUNCE_MAIL 0x10, ...)
    pw_gecos        char(64),
    pw_dir          char(160),      -- may be blank: created at first login or delivery
    pw_shell        char(20),       -- quota: NOQUOTA, 50000000S, 50000000S,1000C
    pw_clear_passwd char(128),      -- only read when clear_passwords = yes
    PRIMARY KEY (pw_name, pw_domain)
);

-- many_domains = no: one table per domain, named after the domain with '.' and '-'
-- replaced by '_' (example-mail.co.uk -> example_mail_co_uk); users without a domain in `users`.
-- CREATE TABLE example_com ( <the columns above without pw_domain>, PRIMARY KEY (pw_name) );

CREATE TABLE IF NOT EXISTS valias (
    alias       char(32) NOT NULL,
    domain      char(96) NOT NULL,
    valias_line text NOT NULL,
    INDEX (alias, domain)
);

CREATE TABLE IF NOT EXISTS lastauth (
    user      char(32) NOT NULL,
    domain    char(96) NOT NULL,
    remote_ip char(18) NOT NULL,
    timestamp bigint DEFAULT 0 NOT NULL,
    PRIMARY KEY (user, domain)
);

CREATE TABLE IF NOT EXISTS relay (
    ip_addr   char(18) NOT NULL DEFAULT '',
    timestamp char(12) DEFAULT NULL,
    PRIMARY KEY (ip_addr)
);

CREATE TABLE IF NOT EXISTS ip_alias_map (
    ip_addr char(18) NOT NULL,
    domain  char(96),
    PRIMARY KEY (ip_addr)
);

CREATE TABLE IF NOT EXISTS dir_control (
    domain char(96) NOT NULL,
    cur_users int, level_cur int, level_max int,
    level_start0 int, level_start1 int, level_start2 int,
    level_end0 int, level_end1 int, level_end2 int,
    level_mod0 int, level_mod1 int, level_mod2 int,
    level_index0 int, level_index1 int, level_index2 int,
    the_dir char(160),
    PRIMARY KEY (domain)
);

-- read only when mysql_limits = yes
CREATE TABLE IF NOT EXISTS limits (
    domain                   CHAR(96) PRIMARY KEY,
    maxpopaccounts           INT(10) NOT NULL DEFAULT -1,
    maxaliases               INT(10) NOT NULL DEFAULT -1,
    maxforwards              INT(10) NOT NULL DEFAULT -1,
    maxautoresponders        INT(10) NOT NULL DEFAULT -1,
    maxmailinglists          INT(10) NOT NULL DEFAULT -1,
    diskquota                BIGINT UNSIGNED NOT NULL DEFAULT 0,
    maxmsgcount              BIGINT UNSIGNED NOT NULL DEFAULT 0,
    defaultquota             BIGINT NOT NULL DEFAULT 0,
    defaultmaxmsgcount       BIGINT UNSIGNED NOT NULL DEFAULT 0,
    disable_pop              TINYINT(1) NOT NULL DEFAULT 0,
    disable_imap             TINYINT(1) NOT NULL DEFAULT 0,
    disable_dialup           TINYINT(1) NOT NULL DEFAULT 0,
    disable_passwordchanging TINYINT(1) NOT NULL DEFAULT 0,
    disable_webmail          TINYINT(1) NOT NULL DEFAULT 0,
    disable_relay            TINYINT(1) NOT NULL DEFAULT 0,
    disable_smtp             TINYINT(1) NOT NULL DEFAULT 0,
    disable_spamassassin     TINYINT(1) NOT NULL DEFAULT 0,
    delete_spam              TINYINT(1) NOT NULL DEFAULT 0,
    disable_maildrop         TINYINT(1) NOT NULL DEFAULT 0,
    perm_account             TINYINT(2) NOT NULL DEFAULT 0,
    perm_alias               TINYINT(2) NOT NULL DEFAULT 0,
    perm_forward             TINYINT(2) NOT NULL DEFAULT 0,
    perm_autoresponder       TINYINT(2) NOT NULL DEFAULT 0,
    perm_maillist            TINYINT(4) NOT NULL DEFAULT 0,
    perm_quota               TINYINT(2) NOT NULL DEFAULT 0,
    perm_defaultquota        TINYINT(2) NOT NULL DEFAULT 0
);
