"""The pure decision: from a Pod, its Namespace, the catalogue and the policy to patch operations or a denial.

No I/O and nothing from the other layers: the server, the command line and the tests all call it with
data they have already read.
"""
