import streamlit as st
st.title('Runs')
st.info('coming soon')
