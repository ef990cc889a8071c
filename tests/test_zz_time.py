import time
from qmysql import qmail_database, empty_tables, QmailMysqlTree
def test_t(mariadb):
    with qmail_database(mariadb) as db:
        for i in range(3):
            t=time.perf_counter(); empty_tables(db); t1=time.perf_counter()
            tr = QmailMysqlTree(db); t2=time.perf_counter()
            h = tr.home("home/mail/iain"); t3=time.perf_counter()
            tr.mailbox("iain", 800, 100, h); t4=time.perf_counter()
            tr.close(); t5=time.perf_counter()
            print(f"empty {t1-t:.3f} tree {t2-t1:.3f} home {t3-t2:.3f} insert {t4-t3:.3f} close {t5-t4:.3f}")
    assert 0
