<?php
// Runs Roundcube's own vpopmaild password driver, as Debian's roundcube-plugins ships it, with
// php-cli.  Only rcmail's config object is stood in for (the driver asks it for the host, port
// and timeout); PASSWORD_* come from the plugin's own password.php.
//
//   RC_USER=... RC_CURPASS=... RC_NEWPASS=... php roundcube_vpopmaild.php HOST PORT
//
// prints the driver's result (PASSWORD_SUCCESS = 0, PASSWORD_ERROR = 2, PASSWORD_CONNECT_ERROR = 3).

require_once 'Net/Socket.php';

// password.php declares the plugin class; only its constants are wanted here.
abstract class rcube_plugin {}
require_once '/usr/share/roundcube/plugins/password/password.php';

class harness_config
{
    private $values;

    function __construct($values) { $this->values = $values; }

    function get($name, $default = null)
    {
        return array_key_exists($name, $this->values) ? $this->values[$name] : $default;
    }
}

class rcmail
{
    public static $instance;
    public $config;

    static function get_instance() { return self::$instance; }
}

rcmail::$instance = new rcmail();
rcmail::$instance->config = new harness_config([
    'password_vpopmaild_host' => $argv[1],
    'password_vpopmaild_port' => (int) $argv[2],
    'password_vpopmaild_timeout' => 20,
]);

require_once '/usr/share/roundcube/plugins/password/drivers/vpopmaild.php';

$driver = new rcube_vpopmaild_password();
echo $driver->save(getenv('RC_CURPASS'), getenv('RC_NEWPASS'), getenv('RC_USER')), "\n";
