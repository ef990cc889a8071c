"""vchkpw: checkpassword authentication for vpopmail virtual-domain users."""
