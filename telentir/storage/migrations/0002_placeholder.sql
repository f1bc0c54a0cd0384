-- placeholder until trust-a merges
SELECT 1;
