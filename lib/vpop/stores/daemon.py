"""The configured store, asked through vlookupd: what deliveries and qmail-getpw read and write.

:func:`vpop.stores.open_store` returns a :class:`DaemonStore` to the programs that ask for one
(``via_daemon``) when ``lookup_socket`` is set.  Each question goes to the daemon, which answers
from its own store and its pooled database connections; the first question it cannot answer
(see :class:`vpop.lookup.client.Unavailable`) sends this one and every later one of the process
to the direct store, opened then, so a site whose daemon died works as one without a daemon.
Records come without their password hashes (a delivery does not need them).

Anything else (a method only the direct store has) is handed to the direct store.
"""

from vpop.lookup.client import Client, Unavailable, failure
from vpop.records import Account, User


def _or_direct(method):
    """The method asks the daemon; when it cannot answer, the direct store's method of the same name
    does the work (and so does every later call: the daemon is not asked again)."""

    def call(self, *args):
        try:
            return method(self, *args)
        except Unavailable:
            if self.client is not None:
                self.client.close()
                self.client = None
            return getattr(self.direct(), method.__name__)(*args)

    call.__name__ = method.__name__
    call.__doc__ = method.__doc__
    return call


def _outcome(status: str, answer):
    """``temp`` and ``refused`` are the outcome itself (the database is down behind the daemon, a
    request the daemon turned down): raised, never read as "nothing there"."""
    if status in ("temp", "refused"):
        raise failure(answer)
    return status, answer


class DaemonStore:
    """The store's reads and the delivery's writes through the daemon (see the module)."""

    def __init__(self, settings, log=None) -> None:
        self.settings = settings
        self.log = log
        self.client: Client | None = Client(settings)
        self._direct = None
        #: ask the daemon to read from the primary (a "not found" being confirmed; see
        #: :meth:`vpop.stores.base.Store.confirm_on_primary`)
        self.primary = False
        #: :meth:`expect_recipient`'s answers: ("domain", name) -> Domain | None, ("user", user,
        #: domain) -> the user's answer fields | None; used once each, never on the primary
        self._expected: dict = {}

    # ------------------------------------------------------------------ plumbing

    def direct(self):
        """The store itself, opened on first use (the daemon could not answer)."""
        if self._direct is None:
            from vpop.stores import open_store

            self._direct = open_store(self.settings, self.log)
        return self._direct

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.direct(), name)

    def _ask(self, op: str, fields: list):
        """The daemon's answer (status, fields); raises Unavailable when it cannot answer, and
        a ``temp`` or ``refused`` answer as its outcome (:func:`_outcome`)."""
        if self.client is None:
            raise Unavailable("the daemon did not answer before")
        return _outcome(*self.client.ask(op, [*fields, ("primary", "1")] if self.primary else fields))

    def confirm_on_primary(self) -> bool:
        """Once: the questions that follow are answered from the primary (only the daemon knows
        whether there is a replica; with one server the second round costs one round trip)."""
        if self._direct is not None:
            return self._direct.confirm_on_primary()
        if self.primary or self.settings.store == "cdb":
            return False
        self.primary = True
        return True

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self._direct is not None:
            self._direct.close()

    # ------------------------------------------------------------------ reads

    @_or_direct
    def expect_recipient(self, domain: str, users: list[str], answered=None) -> None:
        """The domain and the users in one ``recipient`` request (a delivery's first questions);
        ``answered``: the daemon's (status, fields) for this very request, asked already
        (vdelivermail's quick path)."""
        if self.primary:
            return
        if answered is None:
            status, answer = self._ask("recipient", [("domain", domain), *(("user", user) for user in users)])
        else:
            status, answer = _outcome(*answered)
        if status != "ok":
            self._expected[("domain", domain)] = None
            return
        found = self._domain_of(domain, answer, "domain_")
        self._expected[("domain", domain)] = found
        index = {value: i for i, value in enumerate(answer.all("for"))}
        columns = {key: answer.all(key) for key in ("name", "uid", "gid", "gecos", "dir", "shell")}
        for user in users:
            i = index.get(user.encode("utf-8", "surrogateescape"))
            self._expected[("user", user, domain)] = None if i is None else self._user_of(
                found.real, lambda key, i=i: columns[key][i])

    def _take(self, key):
        """An expected answer (``KeyError`` when there is none to use)."""
        if self.primary:
            raise KeyError(key)
        return self._expected.pop(key)

    @staticmethod
    def _user_of(real: str, value) -> User:
        """A record from ``value(key)``: the bytes of a ``user`` answer's field (or a ``recipient``'s)."""
        def text(key: str) -> str:
            return (value(key) or b"").decode("utf-8", "surrogateescape")

        def number(key: str) -> int:
            data = value(key) or b""
            return int(data) if data.isdigit() and len(data) <= 19 else 0

        return User(text("name"), real, "", number("uid"), number("gid"), text("gecos"), text("dir"),
                    text("shell"))

    @staticmethod
    def _domain_of(name: str, answer, prefix: str = ""):
        from vpop.assign import Domain

        return Domain(name, answer.text(prefix + "real"), answer.number(prefix + "uid"),
                      answer.number(prefix + "gid"), answer.text(prefix + "dir"))

    @_or_direct
    def domain(self, name: str):
        """The domain as the store resolves it (users/assign; vmail-sql's domain tables)."""
        try:
            return self._take(("domain", name))
        except KeyError:
            pass
        status, answer = self._ask("domain", [("domain", name)])
        if status != "ok":
            return None
        return self._domain_of(name, answer)

    @_or_direct
    def get_user(self, user: str, domain) -> User | None:
        try:
            return self._take(("user", user, domain.name))
        except KeyError:
            pass
        status, answer = self._ask("user", [("user", user), ("domain", domain.name)])
        if status != "ok":
            return None
        return self._user_of(domain.real, answer.get)

    @_or_direct
    def valias_lines(self, alias: str, domain) -> list[str]:
        _, answer = self._ask("valias", [("alias", alias), ("domain", domain.name)])
        return [line.decode("utf-8", "surrogateescape") for line in answer.all("line")]

    @_or_direct
    def popbox(self, local: str, domain) -> str | None:
        status, answer = self._ask("popbox", [("local", local), ("domain", domain.name)])
        return answer.text("mailbox") if status == "ok" else None

    @_or_direct
    def forwarders(self, local: str, domain) -> list[str]:
        _, answer = self._ask("forwarders", [("local", local), ("domain", domain.name)])
        return [target.decode("utf-8", "surrogateescape") for target in answer.all("target")]

    @_or_direct
    def mailbox(self, username: str) -> Account | None:
        """qmail-getpw's question: the ``mailbox`` row's name, uid, gid and home (no password)."""
        status, answer = self._ask("getpw", [("name", username)])
        if status != "ok":
            return None
        return Account(answer.text("name"), answer.number("uid"), answer.number("gid"), answer.text("home"),
                       None, "")

    # ------------------------------------------------------------------ a delivery's writes

    @_or_direct
    def set_user_dir(self, record: User, domain, path: str) -> str:
        _, answer = self._ask("setdir", [("user", record.name), ("domain", domain.name), ("path", path)])
        record.dir = answer.text("dir")
        return record.dir

    @_or_direct
    def next_user_subdir(self, domain, uid: int | None, gid: int | None, noted=None) -> str:
        """MySQL keeps the count in ``dir_control`` (asked of the daemon); the others in files,
        written here as the process's own uid.  ``noted`` (the admin tools' kill note) is for the
        file stores only: a delivery passes none."""
        if self.settings.store != "mysql" or noted is not None:
            return self.direct().next_user_subdir(domain, uid, gid, noted)
        return self._ask("subdir", [("domain", domain.name)])[1].text("subdir")

    def make_user_dir(self, domain, user: str, uid: int | None, gid: int | None, noted=None) -> str:
        from vpop.stores.base import Store

        return Store.make_user_dir(self, domain, user, uid, gid, noted)
