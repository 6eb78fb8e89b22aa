"""Reaching other hosts: the system OpenSSH client and rsync over it.

``argv`` builds the command lines (pure), ``errors`` reads what ssh said when it failed (pure), and
``ssh.SshTransport`` runs them: the only I/O here.
"""
