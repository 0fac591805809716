META
key;value
description;A district round in the style of Gdynia 2020 (Grabowek): one project was removed by the city and kept at cost 0
country;Nowhere
unit;Test
subunit;Riverside
instance;2026
num_projects;5
num_votes;12
budget;100000
vote_type;approval
rule;equalshares/add1
currency;EUR
min_length;1
max_length;3
PROJECTS
project_id;cost;votes;name;selected
1;99500;7;Sports pitch by the school;0
2;30000;6;Benches and shade on the riverside walk;1
3;45000;5;Playground equipment;1
4;12000;4;Language classes for pre-schoolers;1
5;0;4;PROJECT REMOVED BY THE CITY;0
VOTES
voter_id;vote
11;1
12;1,5
13;1,2
14;1,3,5
15;2,3
16;2,4,5
17;3,4
18;1,2,3
19;2,4
20;1,3,4
21;2,5
22;1
