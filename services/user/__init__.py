"""UserService: accounts, Argon2id passwords, sign-in tokens and the user directory."""
