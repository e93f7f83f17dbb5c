"""What leaves a site and how: the wire protocol (keys, error codes, cell suppression), the reply
schema the site guard and the audit check, metric DP on released counts, and secure aggregation."""
