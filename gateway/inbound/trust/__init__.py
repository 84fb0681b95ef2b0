"""Trust in what is filed (issue 11): who really sent a message (SPF, DKIM, DMARC, ARC), the
firm's sender policy, malware scanning (ClamAV) and spam scoring (rspamd). Every check runs
in the filing stage, after the 250: an acknowledgement never waits on DNS or a scanner.
"""
