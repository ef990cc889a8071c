"""The records the stores return: a vpopmail user (``struct vqpasswd``) and an account-store login.

A module of their own, without the stores' code: a program that gets its records from vlookupd
(vdelivermail, qmail-getpw) builds them without importing :mod:`vpop.stores.base`.
"""


class User:
    """A vpopmail user record (``struct vqpasswd``)."""

    __slots__ = ("name", "domain", "passwd", "uid", "gid", "gecos", "dir", "shell", "clear")

    def __init__(self, name: str, domain: str, passwd: str = "", uid: int = 0, gid: int = 0,
                 gecos: str = "", dir: str = "", shell: str = "", clear: str = "") -> None:
        self.name = name
        self.domain = domain
        self.passwd = passwd
        self.uid = uid
        self.gid = gid
        self.gecos = gecos
        self.dir = dir
        self.shell = shell
        self.clear = clear

    def __repr__(self) -> str:
        return f"<User {self.name}@{self.domain} dir={self.dir!r} flags={self.gid:#x}>"


class Account:
    """A login of the account-based stores (qmail-mysql ``mailbox``, vmail-sql ``popbox``).

    ``scheme`` names how ``password`` is stored; ``problem`` is set when the row cannot be
    used for a login (unknown password type, NULL hash, duplicate rows) and says why.
    """

    __slots__ = ("name", "uid", "gid", "home", "password", "scheme", "suspended", "mailbox", "problem")

    def __init__(self, name: str, uid: int, gid: int, home: str, password: str | None, scheme: str,
                 suspended: bool = False, mailbox: str = "", problem: str = "") -> None:
        self.name = name
        self.uid = uid
        self.gid = gid
        self.home = home
        self.password = password
        self.scheme = scheme
        self.suspended = suspended
        self.mailbox = mailbox
        self.problem = problem

    def __repr__(self) -> str:
        return f"<Account {self.name} {self.uid}:{self.gid} {self.home} {self.scheme}>"
