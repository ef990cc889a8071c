"""clearopensmtp: expire roaming users' relay entries (run from cron)."""
