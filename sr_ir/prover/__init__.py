"""`sr-ir prove`: rule semantics, proof tiers, counterexamples and certificates.

Import the pieces you need (`sr_ir.prover.certificates` for the fast certificate check, which loads
no solver; `sr_ir.prover.run` / `sr_ir.prover.tiers` to prove).
"""
